"""GET /dashboard: a live page of the ring and the replicas (HTML shell; static/dashboard.js polls the API).

Replica names are user input, so the page renders them as text only, and the response's
Content-Security-Policy allows scripts from this origin only: no inline script, no inline handlers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "templates"
POLL_INTERVAL_MS = 1000

# connect-src 'self': the page only talks to this LB; frame-ancestors: nobody frames its buttons.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=TEMPLATES_DIR)
router = APIRouter(tags=["dashboard"])


@router.get("/dashboard", response_class=HTMLResponse, summary="Live dashboard of the ring and the replicas")
def dashboard_page(request: Request) -> HTMLResponse:
    """The ring as a circle, one card per replica (state, restarts, requests/s, p99, last error),
    add/remove, and a what-if box; it polls /status and /ring every second."""
    context = {"poll_interval_ms": POLL_INTERVAL_MS}
    return templates.TemplateResponse(request, "dashboard.html", context, headers=SECURITY_HEADERS)
