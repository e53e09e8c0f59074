"""`python -m app.cli`: the same as the `chlb` console script."""

from __future__ import annotations

from app.cli.commands import main

if __name__ == "__main__":
    main()
