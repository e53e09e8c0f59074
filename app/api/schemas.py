"""Pydantic request/response models: what /docs shows and what the contract fixes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Failure(BaseModel):
    """Every error the LB itself produces."""

    message: str = Field(examples=["<Error> Length of hostname list is more than newly added instances"])
    status: Literal["failure"] = "failure"


class Membership(BaseModel):
    """The current members."""

    N: int = Field(description="number of replicas", examples=[3])
    replicas: list[str] = Field(
        description="replica names, in natural sort order", examples=[["Server 1", "Server 2", "Server 3"]]
    )


class MembershipResponse(BaseModel):
    """Answer of /rep, /add and /rm."""

    message: Membership
    status: Literal["successful"] = "successful"


class AddRequest(BaseModel):
    """Body of POST /add: the given names first, generated names for the rest."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "2" or true is not a number

    # No upper bound here: LB_MAX_REPLICAS is the one limit, said in one message by the membership.
    n: int = Field(ge=1, description="how many replicas to add (up to LB_MAX_REPLICAS members)", examples=[2])
    hostnames: list[str] = Field(
        default_factory=list, description="names to use, at most n", examples=[["S5"]]
    )


class RemoveRequest(BaseModel):
    """Body of DELETE /rm: the given names first, then replicas the LB chooses (the newest first).

    `n` larger than the number of replicas removes them all (`{"n": 10, "hostnames": []}` removes all).
    """

    model_config = ConfigDict(extra="forbid", strict=True)  # "2" or true is not a number

    n: int = Field(ge=1, description="how many replicas to remove", examples=[1])
    hostnames: list[str] = Field(
        default_factory=list, description="names to remove, at most n", examples=[["S5"]]
    )
