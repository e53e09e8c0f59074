"""Bodies of the vote API: POST /api/vote and its answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VoteRequest(BaseModel):
    """Body of POST /api/vote."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "2" or true is not a number

    option: str = Field(
        min_length=1,
        max_length=64,
        description="one of the configured options (the keys of GET /api/votes)",
        examples=["docker"],
    )


class VoteResult(BaseModel):
    """Counts after a vote, per option."""

    votes: dict[str, int] = Field(
        description="votes per option, every configured option present (0 if nobody chose it)",
        examples=[{"docker": 4, "helm": 1, "kubernetes": 7, "prometheus": 2}],
    )
