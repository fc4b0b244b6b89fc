"""The `mailbot` program ends without the interpreter's teardown (mailbot/cli/exit.py), and
nothing a person sees changes: the whole output, the log lines, the exit status."""

from __future__ import annotations

import sys
from pathlib import Path

from app import mailbot_cli

REPO = Path(__file__).resolve().parents[1]


def test_a_commands_whole_output_arrives_and_it_exits_0() -> None:
    done = mailbot_cli("init", "--example")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (REPO / "config.example.toml").read_text()


def test_a_wrong_config_still_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "mailbot.toml"
    config.write_text((REPO / "config.example.toml").read_text().replace("process_batch = ", "process_batch = -", 1))
    done = mailbot_cli("-c", str(config), "poll", "--once")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "process_batch" in done.stderr


def test_a_failed_check_exits_1_and_a_usage_error_2(tmp_path: Path) -> None:
    assert mailbot_cli("-c", str(tmp_path / "missing.toml"), "check").returncode == 1
    usage = mailbot_cli("no-such-command")
    assert usage.returncode == 2 and "No such command" in usage.stderr


def test_the_installed_program_is_this_way_out() -> None:
    script = Path(sys.executable).parent / "mailbot"
    assert "from mailbot.cli.exit import run" in script.read_text()
