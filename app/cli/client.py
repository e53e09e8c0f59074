"""One HTTP call to the LB per command; every failure a one-line CliError that names the LB."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

# Exit codes scripts can test (README, "Command line").
EXIT_OK = 0
EXIT_REFUSED = 1  # the LB answered with an error: 401 without/with a wrong token, 4xx, 5xx
EXIT_USAGE = 2  # bad options or arguments (click's own code for usage errors)
EXIT_UNREACHABLE = 3  # no answer: nothing listens at --url, DNS, or a timeout

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_TIMEOUT = 30.0
ERROR_PREFIX = "<Error> "
LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def one_line(text: str) -> str:
    """`text` on one line: line breaks become one space; other spaces stay as they are (names keep theirs)."""
    return LINE_BREAKS.sub(" ", text).strip()


class CliError(Exception):
    """A failure to report as one line on stderr, then exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = one_line(message)  # whatever the server sent
        self.code = code


@dataclass
class LBClient:
    """The LB at `url`; `token` goes out as `Authorization: Bearer` when set."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def address(self) -> str:
        """The LB as every error line names it: --url without a trailing slash."""
        return self.url.rstrip("/") or self.url

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON body of a 2xx answer; CliError for anything else."""
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        where = f"{method} {path}"
        try:
            response = httpx.request(
                method, self.address + path, json=json, params=params, headers=sent, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            raise CliError(
                f"{self.address}: no answer to {where} within {self.timeout:g}s ({type(exc).__name__})",
                EXIT_UNREACHABLE,
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CliError(f"{self.address}: not a usable --url: {exc}", EXIT_USAGE) from exc
        except httpx.HTTPError as exc:
            raise CliError(
                f"{self.address}: cannot reach the load balancer: {exc or type(exc).__name__}",
                EXIT_UNREACHABLE,
            ) from exc
        return self._body(where, response)

    def _body(self, where: str, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and body is not None:
            return body
        answered = f"{self.address} answered {response.status_code} to {where}"
        if response.is_success:
            raise CliError(f"{answered}, not JSON", EXIT_REFUSED)
        message = _message(body) or response.text.strip()[:200] or response.reason_phrase
        if response.status_code == 401:
            hint = "the token was not accepted" if self.token else "pass --token or set CHLB_TOKEN"
            raise CliError(f"{answered}: {message} ({hint})", EXIT_REFUSED)
        raise CliError(f"{answered}: {message}", EXIT_REFUSED)


def _message(body: Any) -> str | None:
    """The contract's failure message without its `<Error> ` prefix."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"]).removeprefix(ERROR_PREFIX)
    return None
