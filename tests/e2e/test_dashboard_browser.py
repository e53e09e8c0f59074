"""/dashboard in headless Chromium against real LBs: the ring, live cards, add, kill, hostile names."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_support import BROWSER_MARKS, screenshot_dir
from tests.lb_support import LBFactory, RunningLB, replica_pids

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
WAIT = 30  # seconds; generous: two shared cores run Chromium, the LB and the replicas
TOKEN = "dashboard-test-token"
HOSTILE = "<img src=x onerror=alert(1)>"
RED = "rgb(180, 35, 24)"  # dashboard.css --bad: a last error that still holds
GREY = "rgb(91, 100, 117)"  # --muted: a last error the replica has been up since
AGO = re.compile(r"[0-9]+ s ago")

# One snapshot of what the page shows, read in one call so elements cannot go stale in between.
READ_PAGE = """
function errorOf(card) {
  const box = card.querySelector('.last-error');
  const time = box.querySelector('time');
  return box.hidden ? null : {
    text: box.querySelector('.last-error-text').textContent, past: box.classList.contains('past'),
    colour: getComputedStyle(box).color,
    time: time.hidden ? null : {ago: time.textContent, title: time.title, datetime: time.dateTime},
  };
}
const cards = {};
for (const c of document.querySelectorAll('#cards .card')) {
  cards[c.querySelector('.name').textContent] = {
    state: c.dataset.state, colour: ['ok', 'bad', 'busy', 'other'].find((k) => c.classList.contains(k)),
    pid: c.querySelectorAll('.stats dd')[5].textContent,
    rate: c.querySelectorAll('.stats dd')[2].textContent,
    p99: c.querySelectorAll('.stats dd')[3].textContent,
    history: [...c.querySelectorAll('.history span')].map((s) => s.className),
    error: errorOf(c),
  };
}
return {
  cards,
  legend: [...document.querySelectorAll('#legend .legend-name')].map((e) => e.textContent),
  arcs: [...new Set([...document.querySelectorAll('#ring .arc')].map((a) => a.dataset.replica))].sort(),
  arcCount: document.querySelectorAll('#ring .arc').length,
  caption: document.getElementById('ring-caption').textContent,
  shares: [...document.querySelectorAll('#legend li')].map((li) => li.textContent),
  ringShown: !document.getElementById('ring-panel').hidden,
  live: document.getElementById('live').textContent,
};
"""


def page(browser: WebDriver) -> dict[str, Any]:
    state: dict[str, Any] = browser.execute_script(READ_PAGE)
    return state


def wait_for(browser: WebDriver, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
    """Poll the page until `predicate(snapshot)` holds; return that snapshot."""
    found: dict[str, Any] = {}

    def check(_: WebDriver) -> bool:
        found.update(page(browser))
        return bool(predicate(found))

    WebDriverWait(browser, timeout, poll_frequency=0.1).until(check)
    return found


def open_dashboard(browser: WebDriver, lb: RunningLB, desktop: bool = True) -> None:
    browser.get(f"{lb.url}/dashboard")
    if desktop:  # after get(): a navigation resets the override to the phone of the fixture
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", DESKTOP)
    # Alerts are recorded instead of shown, so a script that ran would leave a trace.
    browser.execute_script("window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));")


def no_script_ran(browser: WebDriver) -> bool:
    try:
        browser.switch_to.alert  # noqa: B018 - raises when no alert is open
    except NoAlertPresentException:
        return bool(browser.execute_script("return window.__alerts.length === 0"))
    return False


@pytest.mark.parametrize("strategy", ["ketama", "rendezvous"])
def test_the_dashboard_shows_three_replicas_and_the_ring(
    lb_factory: LBFactory, browser: WebDriver, request: pytest.FixtureRequest, strategy: str
) -> None:
    lb = lb_factory(strategy=strategy)
    names = ["Server 1", "Server 2", "Server 3"]
    open_dashboard(browser, lb, desktop=False)
    shown = wait_for(browser, lambda p: len(p["cards"]) == 3 and p["legend"] == names)
    pids = replica_pids(lb)
    assert {name: (c["state"], c["colour"], c["pid"]) for name, c in shown["cards"].items()} == {
        name: ("up", "ok", str(pids[name])) for name in names
    }
    assert shown["ringShown"] and shown["arcs"] == names
    ring = lb.client.get("/ring").json()
    if strategy == "ketama":  # 160 vnodes each: many arcs, each ending at a point
        assert shown["caption"].startswith(f"{len(ring['points'])} points on the circle")
        assert shown["arcCount"] > 3 * 50
    else:  # no points: one arc per replica, its share of the sample
        assert ring["points"] == [] and shown["arcCount"] == 3
        assert shown["caption"] == (
            "rendezvous places no points on a circle: each arc is the replica's share of a 10,000-key sample."
        )
    assert shown["shares"] == [f"{m['name']}{100 * m['share']:.1f}%" for m in ring["members"]]
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.save_screenshot(str(screenshot_dir(request) / "phone.png"))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", DESKTOP)
    browser.save_screenshot(str(screenshot_dir(request) / "dashboard.png"))
    assert no_script_ran(browser)


def test_cards_show_requests_per_second_and_p99(
    lb_factory: LBFactory, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    lb = lb_factory(replicas="2")
    open_dashboard(browser, lb)
    wait_for(browser, lambda p: len(p["cards"]) == 2)
    key = next(str(i) for i in range(1000) if lb.serving(str(i)) == "Server 2")
    busy = re.compile(r"[0-9,]+\.[0-9]")
    shown: dict[str, Any] = {}
    with httpx.Client(base_url=lb.url, timeout=5) as client:
        for _ in range(300):  # bounded: 300 bursts of 10 requests at most
            for _ in range(10):
                assert client.get("/home", params={"id": key}).status_code == 200
            shown = page(browser)
            if (
                busy.fullmatch(shown["cards"]["Server 2"]["rate"])
                and shown["cards"]["Server 2"]["rate"] != "0.0"
            ):
                break
    card = shown["cards"]["Server 2"]
    assert busy.fullmatch(card["rate"]) and float(card["rate"].replace(",", "")) > 0, card
    assert re.fullmatch(r"[0-9,]+\.[0-9] ms", card["p99"]), card
    assert lb.status()["Server 2"]["requests"] > 0
    browser.save_screenshot(str(screenshot_dir(request) / "traffic.png"))

    lb.stop()  # the page says so, greys out what it shows, and keeps retrying
    wait_for(browser, lambda p: p["live"].startswith("cannot reach the load balancer; retrying in"))
    assert "stale" in (browser.find_element(By.CSS_SELECTOR, "main").get_attribute("class") or "")
    assert set(page(browser)["cards"]) == {"Server 1", "Server 2"}


def test_a_killed_replica_turns_red_then_green_without_a_reload(
    lb_factory: LBFactory, browser: WebDriver, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Restarts of this replica fail three times (back-off 0.5 + 1 + 2 s), so "down" lasts long enough
    # for a page that polls every second to see it; the fourth start serves.
    fail_file = tmp_path / "failures-left"
    command = [sys.executable, "-m", "tests.flaky_replica", "--fd", "{fd}", "--fail-file", str(fail_file)]
    lb = lb_factory(replica_command=command)
    open_dashboard(browser, lb)
    wait_for(browser, lambda p: [c["state"] for c in p["cards"].values()] == ["up"] * 3)
    browser.execute_script("window.__sameDocument = true;")
    victim = "Server 2"
    pid = replica_pids(lb)[victim]
    fail_file.write_text("3")
    os.kill(pid, signal.SIGKILL)

    down = wait_for(browser, lambda p: p["cards"][victim]["colour"] == "bad")
    assert down["cards"][victim]["state"] in {"down", "backoff"}
    error = down["cards"][victim]["error"]  # while it holds: red, with when
    assert error is not None and not error["past"] and error["colour"] == RED, error
    assert error["time"] is not None and AGO.fullmatch(error["time"]["ago"]), error
    assert [down["cards"][n]["state"] for n in ("Server 1", "Server 3")] == ["up", "up"]
    browser.save_screenshot(str(screenshot_dir(request) / "down.png"))

    back = wait_for(
        browser, lambda p: p["cards"][victim]["colour"] == "ok" and p["cards"][victim]["pid"] != str(pid)
    )
    assert back["cards"][victim]["state"] == "up"
    assert back["cards"][victim]["pid"] == str(replica_pids(lb)[victim])
    assert "bad" in back["cards"][victim]["history"]  # the strip still shows the outage
    error = back["cards"][victim]["error"]  # kept, but greyed: up since
    assert error is not None and error["past"] and error["colour"] == GREY, error
    assert victim in back["legend"]
    assert browser.execute_script("return window.__sameDocument === true")  # no reload happened
    browser.save_screenshot(str(screenshot_dir(request) / "up-again.png"))


def test_a_replaced_replica_shows_when_its_last_error_was_and_greys_it(
    lb_factory: LBFactory, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    lb = lb_factory()  # replicas forked from the fork server: replaced in well under a second
    open_dashboard(browser, lb)
    first = wait_for(browser, lambda p: [c["state"] for c in p["cards"].values()] == ["up"] * 3)
    assert [c["error"] for c in first["cards"].values()] == [None] * 3
    victim = "Server 3"
    pid = replica_pids(lb)[victim]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)

    def replaced(p: dict[str, Any]) -> bool:
        card = p["cards"][victim]
        return card["state"] == "up" and card["pid"] not in {"–", str(pid)} and card["error"] is not None

    back = wait_for(browser, replaced)
    row = lb.status()[victim]
    assert (row["state"], row["last_error"]) == ("up", "replica exited")
    at = row["last_error_at"]
    assert killed_at <= at <= time.time()
    error = back["cards"][victim]["error"]
    assert error["text"] == "last error: replica exited"
    assert error["time"] is not None and AGO.fullmatch(error["time"]["ago"]), error
    assert datetime.fromisoformat(error["time"]["datetime"]).timestamp() == pytest.approx(at, abs=0.001)
    assert datetime.fromtimestamp(at).strftime("%H:%M:%S") in error["time"]["title"]  # absolute, local
    assert error["past"] and error["colour"] == GREY, error  # up since the error: greyed, not red
    assert [back["cards"][n]["error"] for n in ("Server 1", "Server 2")] == [None, None]
    browser.save_screenshot(str(screenshot_dir(request) / "last-error.png"))
    # Relative to now: the next polls count on.
    later = wait_for(browser, lambda p: p["cards"][victim]["error"]["time"]["ago"] != error["time"]["ago"])
    assert AGO.fullmatch(later["cards"][victim]["error"]["time"]["ago"])


def test_add_from_the_page_asks_for_the_token_and_appears_on_the_ring(
    lb_factory: LBFactory, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    lb = lb_factory(admin_token=TOKEN)
    open_dashboard(browser, lb)
    wait_for(browser, lambda p: len(p["legend"]) == 3)

    # What if: the page shows the LB's own plan, then applies it.
    browser.find_element(By.ID, "plan-add").send_keys("S9")
    browser.find_element(By.CSS_SELECTOR, "#plan-form button").click()
    plan = lb.client.post("/ring/plan", json={"add": ["S9"], "remove": []}).json()
    summary = browser.find_element(By.ID, "plan-summary")
    WebDriverWait(browser, WAIT).until(lambda _: summary.text)
    assert summary.text == (
        f"Adding S9 would move {plan['moved']:,} of {plan['sample_size']:,} sampled keys "
        f"({100 * plan['moved_share']:.1f}%)."
    )
    flows = browser.find_element(By.ID, "plan-flows").text.splitlines()
    assert flows[0] == f"{plan['flows'][0]['from']} → S9: {plan['flows'][0]['keys']:,} keys"

    # Adding needs the token: the page asks for it, keeps it for this tab, and retries.
    browser.find_element(By.ID, "add-names").send_keys("S5")
    browser.find_element(By.ID, "add-button").click()
    token_form = browser.find_element(By.ID, "token-form")
    WebDriverWait(browser, WAIT).until(lambda _: token_form.is_displayed())
    assert "needs its admin token" in browser.find_element(By.ID, "token-reason").text
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3"]
    browser.save_screenshot(str(screenshot_dir(request) / "token.png"))
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    token_form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    shown = wait_for(browser, lambda p: "S5" in p["legend"] and p["cards"].get("S5", {}).get("state") == "up")
    assert "S5" in shown["arcs"]
    assert lb.replicas() == ["S5", "Server 1", "Server 2", "Server 3"]
    assert browser.execute_script("return sessionStorage.getItem('chlb-admin-token')") == TOKEN
    assert browser.find_element(By.ID, "notice").text == "Added S5."
    browser.save_screenshot(str(screenshot_dir(request) / "added.png"))

    # Remove takes two clicks; the token is already known.
    remove = browser.find_element(By.CSS_SELECTOR, '#cards .card[data-name="S5"] button.remove')
    remove.click()
    assert remove.text == "Click again to remove"
    remove.click()
    wait_for(browser, lambda p: "S5" not in p["cards"] and "S5" not in p["legend"])
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3"]

    # "Do it" applies the what-if plan shown above.
    browser.find_element(By.ID, "plan-apply").click()
    wait_for(browser, lambda p: "S9" in p["legend"] and p["cards"].get("S9", {}).get("state") == "up")
    assert lb.replicas() == ["S9", "Server 1", "Server 2", "Server 3"]


def test_a_hostile_replica_name_is_shown_as_text_and_runs_nothing(
    lb_factory: LBFactory, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    lb = lb_factory(replicas="2")
    csp = lb.client.get("/dashboard").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    open_dashboard(browser, lb)
    wait_for(browser, lambda p: len(p["cards"]) == 2)
    browser.find_element(By.ID, "add-names").send_keys(HOSTILE)
    browser.find_element(By.ID, "add-button").click()

    shown = wait_for(
        browser, lambda p: p["cards"].get(HOSTILE, {}).get("state") == "up" and HOSTILE in p["legend"]
    )
    assert HOSTILE in shown["arcs"]
    assert lb.replicas() == [HOSTILE, "Server 1", "Server 2"]
    card = browser.find_element(By.CSS_SELECTOR, "#cards .card:first-child .name")
    assert card.text == HOSTILE
    assert browser.find_element(By.ID, "notice").text == f"Added {HOSTILE}."
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert no_script_ran(browser)
    browser.save_screenshot(str(screenshot_dir(request) / "hostile-name.png"))


def test_the_header_says_when_the_configuration_was_loaded_and_follows_a_reload(
    lb_factory: LBFactory, browser: WebDriver, tmp_path: Path
) -> None:
    config = tmp_path / "lb.toml"
    config.write_text('strategy = "rendezvous"\n')
    lb = lb_factory(replicas="1", config_file=str(config))
    open_dashboard(browser, lb)
    read = "const e = document.getElementById('config-loaded'); return [e.textContent, e.title];"

    def shown() -> tuple[str, str]:
        text, title = browser.execute_script(read)
        return str(text), str(title)

    WebDriverWait(browser, WAIT, poll_frequency=0.1).until(lambda _: shown()[0].startswith("configuration"))
    assert re.fullmatch(r"configuration loaded [0-9]+ s ago", shown()[0]) and shown()[1]
    config.write_text('strategy = "ketama"\n')
    assert lb.client.post("/config/reload").json()["applied"] == ["strategy"]
    WebDriverWait(browser, WAIT, poll_frequency=0.1).until(
        lambda _: browser.find_element("id", "strategy").text.startswith("strategy ketama")
    )
    assert re.fullmatch(r"configuration loaded [0-9] s ago", shown()[0]), shown()
