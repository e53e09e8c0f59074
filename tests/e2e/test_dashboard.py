"""/dashboard without a browser: the template, its security headers, no inline script, and the links to it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from app.launch import where_to_look
from tests.lb_support import ROOT, RunningLB
from tests.vote_app import TestClient, make_app, make_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(make_settings(tmp_path))) as client:
        yield client


class ScriptAudit(HTMLParser):
    """Collects what a Content-Security-Policy without 'unsafe-inline' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.sources: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.inline += [name for name in found if name.startswith("on") or name == "style"]
        if tag == "script":
            self._in_script = True
            self.sources.append(found.get("src") or "")
        if tag == "style":
            self.inline.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def test_dashboard_page_sends_a_strict_csp_and_has_no_inline_code(client: TestClient) -> None:
    response: Any = client.get("/dashboard")
    assert response.status_code == 200
    assert response.template.name == "dashboard.html"
    assert response.context["poll_interval_ms"] == 1000
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert re.findall(r"https?://", response.text) == []  # nothing from other hosts: works offline
    audit = ScriptAudit()
    audit.feed(response.text)
    assert audit.inline == []
    assert audit.sources == ["/static/dashboard.js"]
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert client.get(asset).status_code == 200


def test_dashboard_script_never_writes_html() -> None:
    source = (ROOT / "static" / "dashboard.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", source)


def test_the_vote_page_and_the_docs_link_to_the_dashboard(client: TestClient) -> None:
    assert 'href="/dashboard"' in client.get("/vote").text
    assert "[dashboard](/dashboard)" in client.get("/openapi.json").json()["info"]["description"]


def test_dashboard_is_served_by_the_lb_itself(lb: RunningLB) -> None:
    # A reserved path: the data plane must not proxy it to a replica.
    response = lb.client.get("/dashboard")
    assert response.status_code == 200 and "content-security-policy" in response.headers


def test_the_start_up_log_says_where_to_look(lb: RunningLB) -> None:
    base = lb.url
    assert f"dashboard {base}/dashboard | voting page {base}/vote | API docs {base}/docs" in lb.log()
    assert where_to_look("0.0.0.0", 5000).startswith("dashboard http://localhost:5000/dashboard")
    assert where_to_look("::1", 8080).startswith("dashboard http://[::1]:8080/dashboard")
