"""Imports point down: the rules of the layout that the README states, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (`import x.y`, `from x.y import z`), TYPE_CHECKING blocks included."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def importers_of(prefix: str, files: list[Path]) -> list[str]:
    def imports(path: Path) -> bool:
        return any(m == prefix or m.startswith(prefix + ".") for m in imported_modules(path))

    return sorted(path.name for path in files if imports(path))


def test_only_the_entry_point_is_the_entry_point() -> None:
    files = [p for p in APP.rglob("*.py") if p != APP / "__main__.py"]
    assert importers_of("app.__main__", files) == []


def test_the_control_plane_does_not_import_the_data_plane() -> None:
    assert importers_of("app.dataplane", list((APP / "control").rglob("*.py"))) == []


def test_the_upstream_client_and_the_rings_import_neither_plane() -> None:
    files = [*(APP / "upstream").rglob("*.py"), *(APP / "ring").rglob("*.py")]
    assert importers_of("app.dataplane", files) == importers_of("app.control", files) == []


def test_settings_import_no_store_and_no_plane() -> None:
    settings = [APP / "settings.py"]
    for layer in ("app.voting.store", "app.dataplane", "app.control", "app.api", "app.main"):
        assert importers_of(layer, settings) == [], layer


def test_the_checker_sees_imports_of_every_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import app.__main__\nfrom app.dataplane import server\n"
        "if TYPE_CHECKING:\n    from app.control.x import y\n"
    )
    assert importers_of("app.__main__", [probe]) == importers_of("app.dataplane", [probe]) != []
    assert importers_of("app.control", [probe]) != []
