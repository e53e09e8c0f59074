"""LB_ variables that no setting reads are named at start, with the closest setting."""

from __future__ import annotations

from pathlib import Path

from app.unknown_settings import setting_names, unknown_variables


def test_a_typo_is_named_with_the_closest_setting(tmp_path: Path) -> None:
    lines = unknown_variables({"LB_STRATGY": "ketama", "HOME": "/root"}, dotenv=tmp_path / "absent")
    assert lines == [
        "LB_STRATGY (from the environment) is not a setting and is ignored; did you mean LB_STRATEGY?"
    ]


def test_a_name_close_to_nothing_gets_no_hint(tmp_path: Path) -> None:
    assert unknown_variables({"LB_QQQQQQ": "1"}, dotenv=None) == [
        "LB_QQQQQQ (from the environment) is not a setting and is ignored"
    ]


def test_dotenv_is_read_too_and_the_environment_named_first(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LB_WORKRS=2\nLB_PORT=5001\nLB_STRATGY=x\n")
    lines = unknown_variables({"LB_STRATGY": "ketama"}, dotenv=dotenv)
    assert lines == [
        "LB_STRATGY (from the environment) is not a setting and is ignored; did you mean LB_STRATEGY?",
        f"LB_WORKRS (from {dotenv}) is not a setting and is ignored; did you mean LB_WORKERS?",
    ]


def test_every_setting_alias_and_lower_case_name_is_known() -> None:
    env = {"LB_PORT": "1", "LB_BACKEND": "docker", "LB_RUNTIME": "docker", "lb_strategy": "x"}
    env["LB_COMPILED"] = "0"  # read by app.native, not by Settings
    assert unknown_variables(env, dotenv=None) == []
    assert {"LB_PORT", "LB_BACKEND", "LB_MAX_REPLICAS", "LB_VOTE_OPTIONS"} <= setting_names()


def test_other_variables_are_none_of_its_business() -> None:
    assert unknown_variables({"PATH": "/bin", "LBX": "1", "XLB_PORT": "1"}, dotenv=None) == []
