"""The settings file (LB_CONFIG_FILE): TOML whose keys are the settings' names without `LB_`, in lower case.

Read at start and on every reload; the environment (and .env) override it. Every problem is collected, so a
bad file is reported whole, once: a typo names the closest setting.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

VARIABLE = "LB_CONFIG_FILE"


def config_file_path(environ: Mapping[str, str], dotenv: Path = Path(".env")) -> Path | None:
    """Where the file is: LB_CONFIG_FILE in the environment, else in .env; None when neither sets it."""
    for name, value in environ.items():
        if name.upper() == VARIABLE and value:
            return Path(value)
    if dotenv.is_file():
        for name, found in dotenv_values(dotenv).items():
            if name.upper() == VARIABLE and found:
                return Path(found)
    return None


def read_config_file(path: Path, known: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """The file's settings, and one line per problem (unreadable, not TOML, unknown or nested keys)."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        return {}, [f"{VARIABLE}={path} cannot be read: {exc.strerror or exc}"]
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{VARIABLE}={path} is not valid TOML: {exc}"]
    names = sorted(set(known) - {"config_file"})
    problems = []
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"{path}: '{key}' is not a setting{hint}")
        elif isinstance(value, dict):
            problems.append(f"{path}: '{key}' is a table; settings are plain keys (key = value)")
    return ({} if problems else data), problems


def environment_names(environ: Mapping[str, str], dotenv: Path = Path(".env")) -> tuple[set[str], set[str]]:
    """Upper-cased LB_ names set in the environment, and in .env (where each value came from)."""
    in_env = {name.upper() for name in environ if name.upper().startswith("LB_")}
    in_dotenv = set()
    if dotenv.is_file():
        in_dotenv = {name.upper() for name in dotenv_values(dotenv) if name.upper().startswith("LB_")}
    return in_env, in_dotenv
