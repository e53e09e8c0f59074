"""Swagger UI at /docs renders in a real browser with no internet: its assets ship with the project."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_support import BROWSER_MARKS, screenshot_dir
from tests.lb_support import start_lb

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


def authorized_rm_status(browser: WebDriver, url: str, token: str | None) -> str:
    """Open /docs, authorize with `token` (if any), run DELETE /rm's example; the status Swagger UI shows."""
    wait = WebDriverWait(browser, 30)
    browser.get(f"{url}/docs")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "button.authorize"))
    if token is not None:
        browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
        field = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".modal-ux input"))
        field.send_keys(token)
        browser.find_element(By.CSS_SELECTOR, ".modal-ux button.modal-btn.auth.authorize").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".modal-ux button.modal-btn.auth.button"))
        browser.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()
    operation = "#operations-replicas-remove_replicas_rm_delete"
    browser.find_element(By.CSS_SELECTOR, f"{operation} .opblock-summary").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"{operation} .try-out__btn"))[0].click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"{operation} .execute"))[0].click()
    cell = f"{operation} .live-responses-table tr.response .response-col_status"
    status = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, cell).text.strip() or None)
    assert status is not None
    return status


def test_swagger_authorize_button_sends_the_admin_token(
    browser: WebDriver, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lb = start_lb(tmp_path, replicas="1", admin_token="docs-token")
    try:
        assert authorized_rm_status(browser, lb.url, None) == "401"
        # The example body names "S5", not a member: 400 shows the token was accepted and the body read.
        assert authorized_rm_status(browser, lb.url, "docs-token") == "400"
        browser.save_screenshot(str(screenshot_dir(request) / "authorized.png"))
        assert len(lb.replicas()) == 1
    finally:
        lb.stop()
