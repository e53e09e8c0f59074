"""LB_ variables that name no setting: pydantic-settings ignores them, so a typo would change nothing unseen.

`LB_STRATGY=ketama` is reported at start as one warning line naming the closest setting.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import AliasChoices

from app.settings import Settings

PREFIX = "LB_"
# Read by app.native before settings exist; not a field's only name.
READ_ELSEWHERE = frozenset({"LB_COMPILED"})


def setting_names() -> frozenset[str]:
    """Every variable name a setting is read from: LB_<FIELD> and each alias that starts with LB_."""
    names = set(READ_ELSEWHERE)
    for field, info in Settings.model_fields.items():
        names.add(PREFIX + field.upper())
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.update(c.upper() for c in choices if isinstance(c, str) and c.upper().startswith(PREFIX))
    return frozenset(names)


def unknown_variables(
    environ: Mapping[str, str], dotenv: Path | None = Path(".env"), known: Iterable[str] | None = None
) -> list[str]:
    """One warning per LB_ variable (environment or .env) that no setting reads, with the closest one."""
    known = setting_names() if known is None else frozenset(known)
    seen = {name.upper(): "the environment" for name in environ}
    if dotenv is not None and dotenv.is_file():
        for name in dotenv_values(dotenv):
            seen.setdefault(name.upper(), str(dotenv))
    lines = []
    for name, source in sorted(seen.items()):
        if not name.startswith(PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"{name} (from {source}) is not a setting and is ignored{hint}")
    return lines


def warn_unknown(logger: logging.Logger) -> None:
    """Log each unknown LB_ variable of this process's environment and ./.env as a warning."""
    for line in unknown_variables(os.environ):
        logger.warning(line)
