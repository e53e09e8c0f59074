"""One HTTP call to the LB per command, every failure turned into a one-line CliError with an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

# Exit codes scripts can test (README, "Command line").
EXIT_OK = 0
EXIT_REFUSED = 1  # the LB answered with an error: 401 without/with a wrong token, 4xx, 5xx
EXIT_USAGE = 2  # bad options or arguments (click's own code for usage errors)
EXIT_UNREACHABLE = 3  # no answer: nothing listens at --url, DNS, or a timeout

DEFAULT_URL = "http://127.0.0.1:5000"
ERROR_PREFIX = "<Error> "


class CliError(Exception):
    """A failure to report as one line on stderr, then exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the server sent
        self.code = code


@dataclass
class LBClient:
    """The LB at `url`; `token` goes out as `Authorization: Bearer` when set."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = 30.0

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
        target = self.url.rstrip("/") + path
        try:
            response = httpx.request(
                method, target, json=json, params=params, headers=sent, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            raise CliError(
                f"the load balancer at {self.url} did not answer within {self.timeout:g}s ({exc!r})",
                EXIT_UNREACHABLE,
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CliError(f"invalid --url {self.url!r}: {exc}", EXIT_USAGE) from exc
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the load balancer at {self.url}: {exc or type(exc).__name__}", EXIT_UNREACHABLE
            ) from exc
        return self._body(method, path, response)

    def _body(self, method: str, path: str, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and body is not None:
            return body
        message = _message(body) or response.text.strip()[:200] or response.reason_phrase
        where = f"{method} {path}"
        if response.status_code == 401:
            hint = "the token was not accepted" if self.token else "pass --token or set CHLB_TOKEN"
            raise CliError(f"refused: {message} (HTTP 401 on {where}; {hint})", EXIT_REFUSED)
        if response.is_success:
            raise CliError(f"unexpected answer to {where}: not JSON", EXIT_REFUSED)
        raise CliError(f"{message} (HTTP {response.status_code} on {where})", EXIT_REFUSED)


def _message(body: Any) -> str | None:
    """The contract's failure message without its `<Error> ` prefix."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"]).removeprefix(ERROR_PREFIX)
    return None
