"""The /vote page in headless Chromium against a real uvicorn server: voting, live updates, errors."""

from __future__ import annotations

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_support import BROWSER_MARKS, PHONE, screenshot_dir

pytestmark = BROWSER_MARKS


def count(browser: WebDriver, option: str) -> int:
    return int(browser.find_element(By.CSS_SELECTOR, f'.card[data-option="{option}"] .n').text)


def chosen(browser: WebDriver, option: str) -> bool:
    card = browser.find_element(By.CSS_SELECTOR, f'.card[data-option="{option}"]')
    button = card.find_element(By.CSS_SELECTOR, "button.vote")
    return button.get_attribute("aria-pressed") == "true" and "chosen" in (card.get_attribute("class") or "")


def fits_the_width(browser: WebDriver) -> bool:
    return bool(browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def test_vote_then_see_another_clients_vote_live(
    server_url: str, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    browser.get(f"{server_url}/vote")
    wait = WebDriverWait(browser, 10)
    assert [count(browser, o) for o in ("kubernetes", "docker", "helm", "prometheus")] == [0, 0, 0, 0]
    assert browser.execute_script("return window.innerWidth") == PHONE["width"]
    assert fits_the_width(browser)

    docker = browser.find_element(By.CSS_SELECTOR, '.card[data-option="docker"] button.vote')
    assert docker.accessible_name == "Vote for Docker"
    docker.click()
    wait.until(lambda _: count(browser, "docker") == 1 and chosen(browser, "docker"))
    assert not chosen(browser, "helm")

    # Another voter, through the API: the page must show it without a reload.
    with httpx.Client(base_url=server_url, timeout=5) as client:
        response = client.post("/api/vote", json={"option": "helm"}, headers={"X-Voter-Id": "phone-2"})
        assert response.json() == {"votes": {"docker": 1, "helm": 1, "kubernetes": 0, "prometheus": 0}}
    wait.until(lambda _: count(browser, "helm") == 1)
    assert browser.find_element(By.ID, "total").text == "2"
    assert chosen(browser, "docker") and not chosen(browser, "helm")
    assert not browser.find_element(By.ID, "vote-error").is_displayed()
    browser.save_screenshot(str(screenshot_dir(request) / "vote.png"))

    # The narrowest phones in common use.
    narrow = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", narrow)
    assert browser.execute_script("return window.innerWidth") == 360
    assert fits_the_width(browser)


def test_a_failed_vote_shows_an_alert(
    server_url: str, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    browser.get(f"{server_url}/vote")
    browser.delete_all_cookies()  # no voter id any more: the server must refuse the vote
    browser.find_element(By.CSS_SELECTOR, '.card[data-option="helm"] button.vote').click()

    alert = browser.find_element(By.CSS_SELECTOR, '[role="alert"]')
    WebDriverWait(browser, 10).until(lambda _: alert.is_displayed())
    assert alert.text == (
        "Your vote was not counted: this browser sent no valid voter cookie. "
        "Allow cookies for this site and reload the page."
    )
    assert count(browser, "helm") == 0 and not chosen(browser, "helm")
    browser.save_screenshot(str(screenshot_dir(request) / "vote.png"))
