"""Every `mailbot ...` command shown in the README and docs/ exists, with the options it is shown with."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from mailbot.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GLOBAL = {"-c": True, "--config": True, "-v": False, "--verbose": False}  # option: takes a value


def shown_commands(text: str) -> list[str]:
    """Command lines from ```sh blocks and from `inline code` that starts with mailbot."""
    lines: list[str] = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.DOTALL):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"(?<!`)`((?:[\w./]*/)?mailbot [^`]+)`", text)
    commands = []
    for line in lines:
        for part in re.split(r"&&|\|\||\||;", line):
            words = shlex.split(part, comments=True) if part.count("'") % 2 == 0 else part.split()
            while words and ("=" in words[0] or words[0] == "sudo"):  # VAR=value, sudo -u user
                words = words[3:] if words[0] == "sudo" and words[1:2] == ["-u"] else words[1:]
            if words and (words[0] == "mailbot" or words[0].endswith("bin/mailbot")):
                commands.append(shlex.join(words))
    return commands


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The click command that `mailbot WORDS` runs, and the words after it."""
    i = 1
    while i < len(words) and words[i].startswith("-"):
        assert words[i] in GLOBAL or words[i] in ("-h", "--help", "--version"), words
        i += 2 if GLOBAL.get(words[i]) else 1
    command: click.Command = main
    while isinstance(command, click.Group) and i < len(words) and not words[i].startswith("-"):
        if words[i].isupper():  # a placeholder: "mailbot COMMAND --help"
            return command, []
        sub = command.get_command(click.Context(command), words[i])
        assert sub is not None, f"no command {words[i]!r} in: {shlex.join(words)}"
        command, i = sub, i + 1
    return command, words[i:]


CASES = [(page.name, cmd) for page in PAGES for cmd in shown_commands(page.read_text(encoding="utf-8"))]


def test_the_pages_show_commands() -> None:
    shown = {name for name, _ in CASES}
    assert {"README.md", "operators.md", "staff.md"} <= shown


@pytest.mark.parametrize(("page", "line"), CASES)
def test_a_command_shown_in_the_docs_exists(page: str, line: str) -> None:
    words = shlex.split(line)
    command, rest = resolve(words)
    # a group runs only a subcommand, unless it does something itself (`mailbot outbox` lists)
    assert (not isinstance(command, click.Group) or command.invoke_without_command or rest == []
            or rest[0] in ("-h", "--help")), (page, line)
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    for word in rest:
        if word.startswith("-") and not re.fullmatch(r"-\d+", word):
            assert word.split("=")[0] in known, f"{page}: {line}: {word} is not an option of this command"
