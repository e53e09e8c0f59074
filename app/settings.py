"""Settings from the environment (prefix LB_), validated by pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

StrategyName = Literal["builtin", "assignment", "sha256", "ketama", "rendezvous", "maglev"]
KeySourceName = Literal["query", "header", "cookie", "path", "client"]
RuntimeName = Literal["process", "docker"]


class Settings(BaseSettings):
    """Every knob of the LB; `LB_<FIELD>` in the environment overrides the default."""

    model_config = SettingsConfigDict(
        env_prefix="LB_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # Listening
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    fd: int | None = Field(
        None, ge=0, description="serve on this inherited, bound socket instead of binding host:port"
    )

    # Membership
    replicas: int = Field(3, ge=0, le=256, description="replicas started at boot")
    replica_prefix: str | None = Field(
        None,
        description="generated names are '<prefix><n>'; default 'Server ' (process) or 'server' (docker)",
    )
    max_replicas: int = Field(50, ge=1, le=1024, description="upper bound on members, against runaway /add")
    runtime: RuntimeName = Field(
        "process",
        # LB_BACKEND is the old name: HAProxy users read "backend" as a group of servers.
        validation_alias=AliasChoices("LB_RUNTIME", "LB_BACKEND", "runtime"),
        description="where replicas run: local processes or Docker containers (LB_BACKEND is the old name)",
    )

    # Hashing
    strategy: StrategyName = "rendezvous"
    vnodes: int = Field(160, ge=1, le=10_000, description="virtual nodes per replica (ketama)")
    key_source: KeySourceName = "query"
    key_name: str = Field("id", description="query parameter, header or cookie that holds the key")

    # Upstream calls
    connect_timeout: float = Field(0.5, gt=0)
    read_timeout: float = Field(10.0, gt=0)
    max_tries: int = Field(3, ge=1, le=16, description="replicas tried per request")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=0)
    max_idle_connections: int = Field(64, ge=0, description="idle keep-alive sockets per replica")

    # Health
    heartbeat_interval: float = Field(0.25, gt=0)
    heartbeat_timeout: float = Field(0.3, gt=0)
    heartbeat_jitter: float = Field(0.1, ge=0, le=1, description="fraction of the interval")
    rise: int = Field(2, ge=1)
    fall: int = Field(2, ge=1)
    replacement_name: Literal["same", "new"] = "same"
    start_timeout: float = Field(20.0, gt=0, description="seconds a new replica has to answer /heartbeat")
    restart_backoff_max: float = Field(30.0, gt=0)
    drain_timeout: float = Field(
        10.0, ge=0, description="seconds a removed replica gets to finish its requests in flight"
    )

    # Process runtime
    replica_host: str = "127.0.0.1"
    replica_command: list[str] | None = Field(
        None, description="argv that starts a replica (JSON list); default: this Python's replica_service"
    )

    # Docker runtime
    docker_image: str = "chlb-replica:latest"
    docker_network: str = "chlb-net"
    docker_label: str = "chlb.replica"
    docker_remove_on_stop: bool = True
    docker_in_container: bool = Field(
        False, description="True when the LB itself runs in a container on docker_network"
    )

    # Operations
    admin_token: SecretStr | None = Field(
        None, description="when set, mutating control routes need 'Authorization: Bearer <token>'"
    )
    balance_factor: float | None = Field(
        None, ge=1.0, le=100.0, description="bounded loads: cap per replica = factor x mean in-flight"
    )

    # Voting
    db_path: Path = Path("data/votes.sqlite3")
    vote_options: list[str] = ["kubernetes", "docker", "helm", "prometheus"]

    # Fast path: non-control requests skip FastAPI routing (same behaviour, documented route).
    fast_path: bool = True
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(False, description="one log line per request (uvicorn access log); costs speed")

    @field_validator("admin_token", mode="after")
    @classmethod
    def _empty_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        """LB_ADMIN_TOKEN= (empty, e.g. from compose's ${VAR:-}) means no token, not an empty one."""
        return value if value is not None and value.get_secret_value() else None
