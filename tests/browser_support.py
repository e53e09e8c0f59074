"""Browser fixtures: the LB app in a real uvicorn server, and headless Chromium from Debian's packages."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.lb_support import wait_until
from tests.vote_app import make_app, make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = {"width": 390, "height": 844, "pixelRatio": 2.0}
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"

NO_CHROMIUM = f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
BROWSER_MARKS = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=NO_CHROMIUM)]


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """The vote app in a real uvicorn server, on a socket bound before the thread starts."""
    app = make_app(make_settings(tmp_path))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=10)
        assert server.started, "uvicorn did not start"
        host, port = sock.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium at phone size, driven through Debian's chromedriver (no downloads)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(flag)
    # Emulated, not --window-size: headless Chromium will not make a window narrower than 500px.
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_dir(request: pytest.FixtureRequest) -> Path:
    """test-output/<test name>/, created."""
    path = OUTPUT / str(request.node.name)
    path.mkdir(parents=True, exist_ok=True)
    return path
