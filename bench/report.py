"""Where every benchmark's results go: printed, and written to the file its --out names."""

from __future__ import annotations

from pathlib import Path


def publish(text: str, out: Path) -> None:
    """Print `text` and write it to `out` (its folder is created: bench/out is not committed)."""
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
