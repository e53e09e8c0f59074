"""Secrets from files (LB_ADMIN_TOKEN_FILE, LB_VOTES_PASSWORD_FILE) and LB_VOTES_URL: read, checked in one
line with exit status 2, and never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import BAD_SETTINGS, Settings, load_settings

SECRET = "s3cret-Value-42"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str) -> str:
    """What load_settings prints when it refuses `env` (it must exit with BAD_SETTINGS)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == BAD_SETTINGS
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err


def test_token_and_password_are_read_from_files(tmp_path: Path) -> None:
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text(f"{SECRET}\n")  # editors and `echo` add a newline: it is not part of the secret
    password.write_text("pw\n")
    s = settings(admin_token_file=token, votes_password_file=password)
    assert s.admin_token is not None and s.admin_token.get_secret_value() == SECRET
    assert s.votes_password is not None and s.votes_password.get_secret_value() == "pw"
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


@pytest.mark.parametrize("variable", ["LB_ADMIN_TOKEN_FILE", "LB_VOTES_PASSWORD_FILE"])
def test_an_unreadable_file_is_one_line_and_exit_2(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    err = refused(monkeypatch, capsys, **{variable: str(missing)})
    assert err == f"invalid settings: {variable}={missing} cannot be read: No such file or directory\n"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    err = refused(monkeypatch, capsys, **{variable: str(empty)})
    assert err == f"invalid settings: {variable}={empty} is empty\n"


def test_a_value_and_a_file_for_one_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET)
    err = refused(monkeypatch, capsys, LB_ADMIN_TOKEN=SECRET, LB_ADMIN_TOKEN_FILE=str(token))
    assert err == "invalid settings: set LB_ADMIN_TOKEN or LB_ADMIN_TOKEN_FILE, not both\n"


def test_secrets_are_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET)
    # Another setting is bad: the line names it, and the secrets read meanwhile appear nowhere.
    err = refused(monkeypatch, capsys, LB_ADMIN_TOKEN_FILE=str(token), LB_PORT="http")
    assert err.startswith("invalid setting LB_PORT='http'") and SECRET not in err
    monkeypatch.delenv("LB_PORT")
    err = refused(monkeypatch, capsys, LB_VOTES_URL=f"mysql://u:{SECRET}@db/votes")
    assert err == "invalid settings: LB_VOTES_URL must start with postgresql:// (its value is not shown)\n"


def test_votes_url_selects_postgresql_and_empty_means_sqlite() -> None:
    assert settings(votes_url="").votes_url is None
    url = settings(votes_url=f"postgresql://chlb:{SECRET}@votes-db:5432/votes").votes_url
    assert url is not None and SECRET not in repr(url)
