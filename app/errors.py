"""Domain exceptions, mapped to HTTP responses once in create_app."""

from __future__ import annotations

QUOTE_LIMIT = 64


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of user input for an error message, cut to `limit` characters: never echo a huge value."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    cut = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return f"{cut}... ({len(text)} characters)"


class LoadBalancerError(Exception):
    """Base of every error the LB maps to a `{"message", "status": "failure"}` body."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoReplicasError(LoadBalancerError):
    """The ring is empty, or no replica on it could answer."""

    status_code = 503


class UnknownReplicaError(LoadBalancerError):
    """A name given to /rm is not a member."""

    status_code = 400


class ReplicaExistsError(LoadBalancerError):
    """A name given to /add is already a member."""

    status_code = 409


class PeerCreatedError(ReplicaExistsError):
    """Another LB instance of the same cluster created a replica of that name in the engine just now."""


class InvalidRequestError(LoadBalancerError):
    """The request is well-formed JSON but asks for something impossible."""

    status_code = 400


class ReplicaStartError(LoadBalancerError):
    """The runtime could not bring a replica up (it crashed or never answered /heartbeat)."""

    status_code = 502
