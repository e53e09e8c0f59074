"""Swagger UI at /docs renders in a real browser with no internet: its assets ship with the project."""

from __future__ import annotations

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_support import BROWSER_MARKS, screenshot_dir

pytestmark = BROWSER_MARKS


def test_swagger_ui_renders_every_lb_route_offline(
    server_url: str, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    html = httpx.get(f"{server_url}/docs").text
    assert "cdn.jsdelivr.net" not in html and "/docs-assets/swagger-ui-bundle.js" in html
    browser.get(f"{server_url}/docs")
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    shown = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    paths = {e.text.replace("\u200b", "") for e in shown}
    assert {"/rep", "/add", "/rm", "/status", "/api/vote", "/api/votes", "/{path}"} <= paths
    browser.save_screenshot(str(screenshot_dir(request) / "docs.png"))
    assert httpx.get(f"{server_url}/redoc").status_code == 200
