"""Settings from the environment (prefix LB_), validated by pydantic-settings."""

from __future__ import annotations

import json
import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from app.errors import quote
from app.settings_file import config_file_path, environment_names, read_config_file
from app.voting.options import validate_options

StrategyName = Literal["builtin", "assignment", "sha256", "ketama", "rendezvous", "maglev"]
KeySourceName = Literal["query", "header", "cookie", "path", "client"]
RuntimeName = Literal["process", "docker", "swarm"]


def parse_json(value: object) -> object:
    """List settings arrive as JSON text; bad JSON becomes a validation error (one line), not a traceback."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f'not valid JSON ({exc.msg}); write a JSON list such as ["a", "b"]') from None


JsonList = Annotated[list[str], NoDecode, BeforeValidator(parse_json)]


def check_db_path(path: Path) -> Path:
    """The vote store must be creatable: the path is a writable file or absent, under a writable directory."""
    if path.exists() and not (path.is_file() and os.access(path, os.W_OK)):
        raise ValueError(f"{path} exists but is not a writable file")
    parent = path.parent
    while not parent.exists():  # the store creates missing directories: the nearest existing one decides
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{parent} is not a directory, so {path} cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"directory {parent} is not writable")
    return path


def read_secret(name: str, path: Path) -> SecretStr:
    """A secret from a file (a Swarm or Kubernetes secret): its text without surrounding whitespace."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"{name}={path} cannot be read: {reason}") from None
    if not text:
        raise ValueError(f"{name}={path} is empty")
    return SecretStr(text)


# The settings file's values while read_settings builds a Settings (a source has no other way in).
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("settings_file_values", default=None)


class FileValues(PydanticBaseSettingsSource):
    """LB_CONFIG_FILE's values: under the environment and .env, over the defaults."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: __call__ hands over the whole file."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


class Settings(BaseSettings):
    """Every knob of the LB; `LB_<FIELD>` in the environment overrides LB_CONFIG_FILE, which overrides
    the default."""

    model_config = SettingsConfigDict(
        env_prefix="LB_", env_file=".env", extra="ignore", populate_by_name=True
    )
    # Where each value came from (default, file, environment, .env); set by read_settings.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then .env, then the settings file, then the defaults."""
        return init_settings, env_settings, dotenv_settings, FileValues(settings_cls), file_secret_settings

    @property
    def origins(self) -> dict[str, str]:
        """Where each setting's value came from: default, file, environment or .env."""
        return {name: self._origins.get(name, "default") for name in type(self).model_fields}

    config_file: Path | None = Field(
        None,
        description="a TOML file of settings (keys: the names without LB_, in lower case); the environment"
        " overrides it; re-read on reload (SIGHUP, POST /config/reload)",
    )

    # Listening
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    fd: int | None = Field(
        None, ge=0, description="serve on this inherited, bound socket instead of binding host:port"
    )

    # TLS and HTTP/2 (docs/tls-and-http2.md)
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) of the default host: with LB_TLS_KEY, serve HTTPS too"
    )
    tls_key: Path | None = Field(None, description="PEM private key of LB_TLS_CERT")
    tls_port: int = Field(5443, ge=0, le=65535, description="the HTTPS port (HTTP/2 and HTTP/1.1 by ALPN)")
    tls_certs_dir: Path | None = Field(
        None, description="one <host>.crt + <host>.key per server name (SNI); others get the default pair"
    )
    https_redirect: bool = Field(False, description="plain HTTP answers 308 to the HTTPS URL")
    h2_max_streams: int = Field(100, ge=1, le=10_000, description="concurrent HTTP/2 streams per connection")

    # Membership
    replicas: int = Field(3, ge=0, le=256, description="replicas started at boot")
    replica_prefix: str | None = Field(
        None,
        description="generated names are '<prefix><n>'; default 'Server ' (process), else 'server'",
    )
    max_replicas: int = Field(50, ge=1, le=1024, description="upper bound on members, against runaway /add")
    runtime: RuntimeName = Field(
        "process",
        # LB_BACKEND is the old name: HAProxy users read "backend" as a group of servers.
        validation_alias=AliasChoices("LB_RUNTIME", "LB_BACKEND", "runtime"),
        description=(
            "where replicas run: local processes, Docker containers, or Swarm services (membership then"
            " held by the engine); LB_BACKEND is the old name"
        ),
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
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=0, description="proxied request bodies")
    max_control_body_bytes: int = Field(
        64 * 1024, ge=0, description="request bodies to the LB's own paths (/add, /rm, /api/vote, ...)"
    )
    # At least the requests in flight per replica: below that, each answer closes a connection and the
    # next request opens one (measured under h2load: 64 for ~107 in flight cost 108 µs a request, 128: 79).
    # Keeping what a peak opened adds no descriptor the peak did not already hold.
    max_idle_connections: int = Field(256, ge=0, description="idle keep-alive sockets per replica")

    # Processes
    workers: int = Field(
        1, ge=1, le=64, description="data-plane processes on the port (SO_REUSEPORT); one owns replicas"
    )
    worker_stats_interval: float = Field(
        1.0, gt=0, le=60, description="how often a worker sends its counters to /metrics and /status"
    )

    # Client side (the limits nginx and HAProxy have)
    header_timeout: float = Field(10.0, gt=0, description="seconds a client has to send a request's header")
    keep_alive_timeout: float = Field(5.0, gt=0, description="seconds an idle client connection is kept")
    body_timeout: float = Field(60.0, gt=0, description="seconds between reads of a request body; then 408")
    send_timeout: float = Field(60.0, gt=0, description="seconds a client may read nothing; then close")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="request line + headers; larger -> 431")
    max_connections: int = Field(4096, ge=1, description="concurrent client connections; beyond: 503 at once")

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
    replica_command: JsonList | None = Field(
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

    # Swarm runtime (also uses docker_image and docker_label)
    swarm_cluster: str = Field(
        "chlb",
        min_length=1,
        max_length=63,
        description="replica services carry the label <docker_label>=<swarm_cluster>; "
        "LB instances with the same value share one membership",
    )
    swarm_network: str = Field(
        "chlb-swarm", description="attachable overlay network of the LB and the replicas"
    )
    swarm_restart_delay: float = Field(
        0.5, ge=0, description="seconds the engine waits before restarting a task"
    )
    swarm_resync_interval: float = Field(
        5.0, gt=0, description="seconds between full listings of the engine's services (events come between)"
    )

    # Operations
    admin_token: SecretStr | None = Field(
        None, description="when set, mutating control routes need 'Authorization: Bearer <token>'"
    )
    admin_token_file: Path | None = Field(
        None, description="read the admin token from this file (e.g. a Swarm secret); not with LB_ADMIN_TOKEN"
    )
    balance_factor: float | None = Field(
        None, ge=1.0, le=100.0, description="bounded loads: cap per replica = factor x mean in-flight"
    )

    # Voting
    db_path: Path = Path("data/votes.sqlite3")
    vote_options: JsonList = ["kubernetes", "docker", "helm", "prometheus"]
    votes_url: SecretStr | None = Field(
        None,
        description="postgresql://user@host:port/db: keep votes in PostgreSQL, shared by every LB instance"
        " (LB_DB_PATH is then unused); unset: the SQLite file at LB_DB_PATH",
    )
    votes_password: SecretStr | None = Field(None, description="the database password, if not in the URL")
    votes_password_file: Path | None = Field(
        None, description="read the database password from this file (e.g. a Swarm secret)"
    )
    votes_pool_size: int = Field(4, ge=1, le=64, description="connections to the vote database at most")
    votes_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds to connect to or query the vote database; then 503"
    )

    compiled: bool = Field(
        True,
        description="run the hot path compiled with mypyc when build/native matches the sources"
        " (read from the environment when the app package is imported; .env is too late for it)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(False, description="one log line per request (uvicorn access log); costs speed")

    @field_validator("admin_token", "votes_url", "votes_password", mode="after")
    @classmethod
    def _empty_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        """LB_ADMIN_TOKEN= (empty, e.g. from compose's ${VAR:-}) means no token, not an empty one."""
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _read_secret_files(self) -> Self:
        # In the model, not per field: a field error would print the value it got, and these are secrets.
        if self.admin_token_file is not None:
            if self.admin_token is not None:
                raise ValueError("set LB_ADMIN_TOKEN or LB_ADMIN_TOKEN_FILE, not both")
            self.admin_token = read_secret("LB_ADMIN_TOKEN_FILE", self.admin_token_file)
        if self.votes_password_file is not None:
            if self.votes_password is not None:
                raise ValueError("set LB_VOTES_PASSWORD or LB_VOTES_PASSWORD_FILE, not both")
            self.votes_password = read_secret("LB_VOTES_PASSWORD_FILE", self.votes_password_file)
        return self

    @model_validator(mode="after")
    def _check_votes_url(self) -> Self:
        if self.votes_url is not None:
            scheme = self.votes_url.get_secret_value().partition("://")[0]
            if scheme not in ("postgresql", "postgres"):  # the URL may hold a password: never echo it
                raise ValueError("LB_VOTES_URL must start with postgresql:// (its value is not shown)")
        return self

    @field_validator("vote_options")
    @classmethod
    def _check_vote_options(cls, options: list[str]) -> list[str]:
        return list(validate_options(options))

    @field_validator("db_path")
    @classmethod
    def _check_db_path(cls, path: Path) -> Path:
        return check_db_path(path)

    @model_validator(mode="after")
    def _check_replica_bounds(self) -> Self:
        if self.replicas > self.max_replicas:
            raise ValueError(
                f"LB_REPLICAS={self.replicas} is more than LB_MAX_REPLICAS={self.max_replicas}; "
                "lower the first or raise the second"
            )
        return self


    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both LB_TLS_CERT and LB_TLS_KEY, or neither")
        if self.tls_cert is None and self.tls_certs_dir is not None:
            raise ValueError("LB_TLS_CERTS_DIR needs a default pair: set LB_TLS_CERT and LB_TLS_KEY too")
        if self.tls_cert is None and self.https_redirect:
            raise ValueError("LB_HTTPS_REDIRECT needs HTTPS: set LB_TLS_CERT and LB_TLS_KEY too")
        return self

BAD_SETTINGS = 2  # the exit status of a configuration error, as for a bad command line


def describe(err: ErrorDetails, file_values: dict[str, Any] | None = None, file: Path | None = None) -> str:
    """One line for one invalid setting: `invalid setting LB_X='value': why` (`x in FILE` for the file's)."""
    reason = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a rule across fields: its message names them
        return f"invalid settings: {reason}"
    key = str(err["loc"][0])
    if file_values and key in file_values and err.get("input") == file_values[key]:
        return f"invalid setting {key}={quote(err.get('input'), limit=256)} in {file}: {reason}"
    name = "_".join(str(part) for part in err["loc"]).upper()
    name = name if name.startswith("LB_") else f"LB_{name}"  # aliases are full names already
    return f"invalid setting {name}={quote(err.get('input'), limit=256)}: {reason}"


class BadSettingsError(ValueError):
    """Settings that cannot be used: one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def variable_names(field: str) -> set[str]:
    """The environment variables a field is read from: LB_<FIELD>, and its LB_ aliases."""
    names = {f"LB_{field.upper()}"}
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        names.update(c.upper() for c in alias.choices if isinstance(c, str) and c.upper().startswith("LB_"))
    return names


def read_settings() -> Settings:
    """Settings from the environment, .env and LB_CONFIG_FILE, each value's origin noted; BadSettingsError
    lists every problem. Called at start and on every reload (the file and .env are read again)."""
    environ = dict(os.environ)
    values: dict[str, Any] = {}
    path = config_file_path(environ)
    if path is not None:
        values, problems = read_config_file(path, Settings.model_fields)
        if problems:
            raise BadSettingsError(problems)
    token = _FILE_VALUES.set(values)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise BadSettingsError([describe(err, values, path) for err in exc.errors()]) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise BadSettingsError([f"invalid settings: {exc}"]) from None
    finally:
        _FILE_VALUES.reset(token)
    in_env, in_dotenv = environment_names(environ)
    for field in Settings.model_fields:
        names = variable_names(field)
        if names & in_env:
            settings._origins[field] = "environment"
        elif names & in_dotenv:
            settings._origins[field] = ".env"
        elif field in values:
            settings._origins[field] = "file"
    return settings


def load_settings() -> Settings:
    """read_settings at start: a bad value exits with one line per problem, not a traceback."""
    try:
        return read_settings()
    except BadSettingsError as exc:
        sys.stderr.write("".join(line + "\n" for line in exc.problems))
        raise SystemExit(BAD_SETTINGS) from None
