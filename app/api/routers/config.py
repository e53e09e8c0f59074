"""The configuration: GET /config shows what is in force and where each value came from; POST /config/reload
re-reads it (as SIGHUP does) and applies what can change live."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import ReloaderDep, SettingsDep
from app.api.schemas import Failure
from app.api.security import UNAUTHORIZED_RESPONSE, AdminDep
from app.settings import BadSettingsError

router = APIRouter(tags=["config"])

Origin = Literal["default", "file", "environment", ".env"]


class ConfigResponse(BaseModel):
    """The settings in force."""

    settings: dict[str, Any] = Field(
        description="every setting by name (no LB_ prefix); a secret that is set shows as '**********'"
    )
    origins: dict[str, Origin] = Field(description="where each value came from")
    config_file: str | None = Field(description="LB_CONFIG_FILE, the TOML file read at start and on reload")
    loaded_at: float = Field(description="when the configuration was last loaded (Unix time)")
    restart_needed: list[str] = Field(
        description="settings changed at the last reload that keep their running value until a restart"
    )
    live: list[str] = Field(description="settings a reload applies at once; the others need a restart")
    status: str = "successful"


class ReloadResponse(BaseModel):
    """What a reload changed."""

    message: str = Field(examples=["configuration reloaded (POST /config/reload); applied: header_timeout"])
    applied: list[str] = Field(description="live settings whose value changed, now in force in every process")
    restart_needed: list[str] = Field(
        description="changed settings that need a restart; their running value stays until then"
    )
    moved_share: float | None = Field(
        description="the strategy changed: the share of the sampled keys now routed to another replica"
    )
    loaded_at: float
    status: str = "successful"


class ReloadRefused(Failure):
    """A bad configuration: nothing was changed."""

    problems: list[str] = Field(description="one line per problem")


@router.get("/config", response_model=ConfigResponse)
async def show_config(settings: SettingsDep, reloader: ReloaderDep) -> ConfigResponse:
    """The effective settings (secrets redacted), each value's origin, and when they were loaded."""
    return ConfigResponse(
        settings=reloader.view(settings),
        origins=settings.origins,
        config_file=str(settings.config_file) if settings.config_file else None,
        loaded_at=reloader.loaded_at,
        restart_needed=reloader.restart_needed,
        live=sorted(reloader.live),
    )


@router.post(
    "/config/reload",
    response_model=ReloadResponse,
    dependencies=[AdminDep],
    responses={
        400: {"model": ReloadRefused, "description": "A bad setting; nothing was changed"},
        **UNAUTHORIZED_RESPONSE,
    },
)
async def reload_config(reloader: ReloaderDep) -> ReloadResponse | JSONResponse:
    """Re-read the environment, .env and LB_CONFIG_FILE; apply the live settings to every process at once.

    Validated whole first: a bad file changes nothing and is answered 400 with each problem.
    """
    try:
        outcome = await reloader.reload("POST /config/reload")
    except BadSettingsError as exc:
        message = f"<Error> Reload refused, nothing changed: {'; '.join(exc.problems)}"
        body = {"message": message, "problems": exc.problems, "status": "failure"}
        return JSONResponse(body, status_code=400)
    return ReloadResponse(
        message=outcome.message,
        applied=outcome.applied,
        restart_needed=outcome.restart_needed,
        moved_share=outcome.moved_share,
        loaded_at=outcome.loaded_at,
    )
