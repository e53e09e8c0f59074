"""What a vote option may be: checked once at start-up (settings) and by every store."""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.errors import quote

# Options end up in JSON keys, HTML attributes and logo file names: keep them to plain slugs.
OPTION_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def validate_options(options: Sequence[str]) -> tuple[str, ...]:
    """Fail at start-up on a misconfigured option list rather than on the first vote."""
    if isinstance(options, str):
        raise ValueError("vote options must be a list of names, not one string")
    if not options:
        raise ValueError("at least one vote option is required")
    bad = [o for o in options if not OPTION_PATTERN.fullmatch(o)]
    if bad:
        rule = "use 1-64 of a-z 0-9 _ -, not starting with _ or -"
        raise ValueError(f"invalid vote options {quote(bad)}: {rule}")
    if len(set(options)) != len(options):
        duplicates = sorted({o for o in options if options.count(o) > 1})
        raise ValueError(f"duplicate vote options {quote(duplicates)}: each option must be named once")
    return tuple(options)
