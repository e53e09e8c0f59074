"""LB_CONFIG_FILE: a TOML file of settings under the environment, every problem reported, origins noted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.settings import BadSettingsError, Settings, read_settings

# A .env in the working directory is read too: every test runs in its own empty directory.


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No LB_ variable from outside, and a working directory without a .env."""
    for name in [n for n in os.environ if n.upper().startswith("LB_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def use(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return read_settings()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lb.toml"
    path.write_text(text)
    return path


def test_the_file_sets_values_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'strategy = "ketama"\nheader_timeout = 5\nmax_tries = 2\n')
    settings = use(monkeypatch, LB_CONFIG_FILE=str(path), LB_MAX_TRIES="4")
    assert (settings.strategy, settings.header_timeout, settings.max_tries) == ("ketama", 5.0, 4)
    origins = settings.origins
    assert origins["strategy"] == origins["header_timeout"] == "file"
    assert origins["max_tries"] == origins["config_file"] == "environment"
    assert origins["port"] == "default"


def test_dotenv_is_between_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'strategy = "ketama"\nkey_name = "user"\n')
    (tmp_path / ".env").write_text(f"LB_CONFIG_FILE={path}\nLB_STRATEGY=maglev\n")
    settings = read_settings()
    assert (settings.strategy, settings.key_name) == ("maglev", "user")
    assert (settings.origins["strategy"], settings.origins["key_name"]) == (".env", "file")


def test_every_problem_of_a_bad_file_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'stratgy = "ketama"\nworkers = 2\n[limits]\nx = 1\n')
    with pytest.raises(BadSettingsError) as bad:
        use(monkeypatch, LB_CONFIG_FILE=str(path))
    assert bad.value.problems == [
        f"{path}: 'stratgy' is not a setting; did you mean 'strategy'?",
        f"{path}: 'limits' is not a setting",
    ]


def test_bad_values_in_the_file_name_the_key_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'strategy = "nope"\nheader_timeout = -1\n')
    with pytest.raises(BadSettingsError) as bad:
        use(monkeypatch, LB_CONFIG_FILE=str(path))
    assert bad.value.problems[0].startswith(f"invalid setting strategy='nope' in {path}: Input should be")
    assert (
        bad.value.problems[1]
        == f"invalid setting header_timeout=-1 in {path}: Input should be greater than 0"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "cannot be read: No such file or directory"),
        ("strategy = ", "is not valid TOML: "),
    ],
)
def test_an_unreadable_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, problem: str
) -> None:
    path = write(tmp_path, text) if text is not None else tmp_path / "absent.toml"
    with pytest.raises(BadSettingsError) as bad:
        use(monkeypatch, LB_CONFIG_FILE=str(path))
    (line,) = bad.value.problems
    assert line.startswith(f"LB_CONFIG_FILE={path} {problem}"), line


def test_lists_in_the_file_are_toml_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'vote_options = ["a", "b"]\n')
    assert use(monkeypatch, LB_CONFIG_FILE=str(path)).vote_options == ["a", "b"]
