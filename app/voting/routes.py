"""The poll: POST /api/vote, GET /api/votes and the /vote page with live counts.

The routes are async and depend on the VoteStore Protocol only: the SQLite store does its blocking
calls in a worker thread, the PostgreSQL store talks asyncpg. While the database is unreachable, the
store raises VotesUnavailableError: a 503 with one line, and nothing else of the LB is affected.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.api.deps import VoteStoreDep
from app.api.schemas import Failure
from app.errors import InvalidRequestError
from app.voting.schemas import VoteRequest, VoteResult

__all__ = [
    "STATIC_DIR",
    "VOTER_COOKIE",
    "OptionCard",
    "describe_options",
    "get_voter_id",
    "mount_static",
    "router",
]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

VOTER_COOKIE = "voter_id"
VOTER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
VOTER_ID_RULE = "1-128 characters of A-Z a-z 0-9 _ . : -"
# A browser keeps its one vote for a year; after that it simply gets a new voter id.
VOTER_COOKIE_MAX_AGE = 365 * 24 * 3600
POLL_INTERVAL_MS = 1000

# Options with a hand-drawn logo in static/logos/; any other configured option gets generic.svg.
LOGOS = frozenset({"kubernetes", "docker", "helm", "prometheus"})

templates = Jinja2Templates(directory=TEMPLATES_DIR)
router = APIRouter(tags=["voting"])


def get_voter_id(
    x_voter_id: Annotated[
        str | None,
        Header(
            description=f"Identity of an API client ({VOTER_ID_RULE}). Takes precedence over the cookie.",
            examples=["alice"],
        ),
    ] = None,
    voter_id: Annotated[
        str | None,
        Cookie(description=f"Identity the /vote page gives each browser ({VOTER_ID_RULE})."),
    ] = None,
) -> str:
    """Who is voting: the X-Voter-Id header if present, else the voter_id cookie; 400 if neither is valid."""
    # An invalid header is an error rather than a reason to fall back to the cookie: the client meant it.
    if x_voter_id is not None:
        return _checked(x_voter_id, "the X-Voter-Id header")
    if voter_id is not None:
        return _checked(voter_id, f"the {VOTER_COOKIE} cookie")
    raise InvalidRequestError(
        f"Missing voter id: send an X-Voter-Id header ({VOTER_ID_RULE}), "
        f"or open /vote in a browser, which sets the {VOTER_COOKIE} cookie"
    )


def _checked(voter_id: str, source: str) -> str:
    if not VOTER_ID_PATTERN.fullmatch(voter_id):
        raise InvalidRequestError(f"Invalid voter id in {source}: use {VOTER_ID_RULE}")
    return voter_id


VoterIdDep = Annotated[str, Depends(get_voter_id)]

_FAILURE = {"model": Failure, "description": "malformed body, unknown option, or missing/invalid voter id"}
_UNAVAILABLE = {"model": Failure, "description": "the vote database cannot be reached (LB_VOTES_URL)"}
_COUNTS_EXAMPLE = {"docker": 4, "helm": 1, "kubernetes": 7, "prometheus": 2}


@router.post(
    "/api/vote",
    response_model=VoteResult,
    responses={400: _FAILURE, 503: _UNAVAILABLE},
    summary="Cast or change your vote",
)
async def cast_vote(body: VoteRequest, store: VoteStoreDep, voter_id: VoterIdDep) -> VoteResult:
    """Record the caller's vote and return the counts after it.

    One vote per voter: a new vote replaces the voter's previous one. The voter is identified by

    * the **`X-Voter-Id` header** (API clients; 1-128 characters of `A-Z a-z 0-9 _ . : -`), or else
    * the **`voter_id` cookie** that the `/vote` page sets in the browser.

    Without either, the answer is 400. An unknown option, a malformed or non-JSON body, a wrong type
    or an extra field is also a 400 with a `message`, and nothing is recorded.
    """
    return VoteResult(votes=await store.vote(voter_id, body.option))


@router.get(
    "/api/votes",
    response_model=dict[str, int],
    summary="Current counts",
    responses={
        200: {"content": {"application/json": {"example": _COUNTS_EXAMPLE}}},
        304: {"description": "Nothing changed since the ETag given in If-None-Match"},
        503: _UNAVAILABLE,
    },
)
async def read_votes(
    store: VoteStoreDep,
    if_none_match: Annotated[
        str | None, Header(description="an ETag from an earlier answer: 304 if the counts are unchanged")
    ] = None,
) -> Response:
    """Votes per option, every configured option present (0 if nobody chose it).

    The ETag changes whenever a count changes, so pollers (the /vote page polls every second) can send
    `If-None-Match` and get an empty 304 while nothing happens.
    """
    # Version before counts: a vote landing in between makes the tag older than the data (one spare
    # refresh later), never newer (which would hide that vote from pollers until the next one).
    etag = f'"{await store.revision()}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(await store.tally(), headers=headers)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


@dataclass(frozen=True, slots=True)
class OptionCard:
    """What the page shows for one option."""

    option: str
    label: str
    logo: str
    count: int
    percent: int


def describe_options(counts: dict[str, int], order: tuple[str, ...]) -> list[OptionCard]:
    """Cards in configured order, with display names, logos and each option's share of all votes."""
    total = sum(counts.values())
    return [
        OptionCard(
            option=option,
            label=option.replace("-", " ").replace("_", " ").title(),
            logo=f"logos/{option}.svg" if option in LOGOS else "logos/generic.svg",
            count=counts[option],
            percent=round(100 * counts[option] / total) if total else 0,
        )
        for option in order
    ]


@router.get(
    "/vote", response_class=HTMLResponse, responses={503: _UNAVAILABLE}, summary="The voting page"
)
async def vote_page(
    request: Request,
    store: VoteStoreDep,
    voter_id: Annotated[str | None, Cookie(include_in_schema=False)] = None,
) -> HTMLResponse:
    """HTML page with live counts; gives the browser a random `voter_id` cookie on its first visit."""
    if voter_id is not None and VOTER_ID_PATTERN.fullmatch(voter_id):
        choice, new_voter_id = await store.choice_of(voter_id), None
    else:
        choice, new_voter_id = None, secrets.token_urlsafe(16)
    counts = await store.tally()
    context = {
        "options": describe_options(counts, store.options),
        "total": sum(counts.values()),
        "choice": choice,
        "poll_interval_ms": POLL_INTERVAL_MS,
    }
    # no-store: the page holds this voter's choice, so no shared cache may keep it.
    headers = {"Cache-Control": "no-store"}
    response = templates.TemplateResponse(request, "vote.html", context, headers=headers)
    if new_voter_id is not None:
        # HttpOnly: only the server reads it. Lax: not sent on cross-site POSTs, so other sites cannot vote.
        response.set_cookie(
            VOTER_COOKIE,
            new_voter_id,
            max_age=VOTER_COOKIE_MAX_AGE,
            httponly=True,
            samesite="lax",
        )
    return response


def mount_static(app: FastAPI) -> None:
    """Serve static/ (logos, css, js) at /static; the page's url_for('static', ...) relies on the name."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
