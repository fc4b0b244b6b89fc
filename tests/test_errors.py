"""One error tree (mailbot/errors.py): each error carries the README's exit code, the tree drawn in
the docstring names every subclass, and the CLI ends with that code and one line."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import mailbot
from mailbot import errors
from mailbot.errors import CommandFailed, ConfigurationError, MailbotError, Unreachable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import mailbot_cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _all_subclasses(cls: type) -> set[type]:
    for info in pkgutil.walk_packages(mailbot.__path__, "mailbot."):
        if ".migrations" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: set[type] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("mailbot.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


SUBCLASSES = _all_subclasses(MailbotError)
BRANCHES = {CommandFailed: 1, ConfigurationError: 2, Unreachable: 3}


def test_the_branches_carry_the_readme_exit_codes() -> None:
    text = " ".join(README.split())
    contract = re.search(r"Exit codes: 0 ok, 1 (.*?), 2 (.*?), 3 (.*?)[(.]", text)
    assert contract, "the README's Exit codes line moved: this test reads it"
    assert "failed" in contract.group(1)
    assert "configuration" in contract.group(2)
    assert "server or the database" in contract.group(3)
    assert {cls: cls.exit_code for cls in BRANCHES} == {CommandFailed: 1, ConfigurationError: 2, Unreachable: 3}


@pytest.mark.parametrize("name, code", [
    ("mailbot.store.locks.DaemonLockError", 1),
    ("mailbot.outgoing.render.TemplateError", 1),
    ("mailbot.staffing.staff.StaffError", 1),
    ("mailbot.cli.init.InitError", 1),
    ("mailbot.desk.extractor.ExtractorUnavailable", 1),
    ("mailbot.store.schema.SchemaBehind", 1),
    ("mailbot.config.ConfigError", 2),
    ("mailbot.source.base.SourceError", 3),
    ("mailbot.store.engine.DatabaseError", 3),
])
def test_each_error_has_its_documented_code(name: str, code: int) -> None:
    module, _, cls_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    assert issubclass(cls, MailbotError)
    assert cls.exit_code == code
    assert sum(issubclass(cls, b) for b in BRANCHES) == 1  # in exactly one branch


def test_every_error_sits_under_a_branch() -> None:
    assert SUBCLASSES - set(BRANCHES)  # the walk found the modules' errors
    for cls in SUBCLASSES - set(BRANCHES):
        assert any(issubclass(cls, b) for b in BRANCHES), cls


def test_the_drawn_tree_names_every_subclass() -> None:
    doc = errors.__doc__ or ""
    drawn = set(re.findall(r"[├└]── (\w+)", doc))
    assert drawn == {cls.__name__ for cls in SUBCLASSES}
    for cls in SUBCLASSES:  # and under the branch it really sits in
        branch = next(b for b in BRANCHES if issubclass(cls, b))
        if cls is not branch:
            section = doc.split(f"── {branch.__name__}", 1)[1]
            section = re.split(r"\n    [├└]── ", section, maxsplit=1)[0]
            assert f"── {cls.__name__} " in section, (cls, branch)


def test_the_cli_ends_with_the_error_s_code_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "mailbot.toml"
    bad.write_text("[mailbox]\nport = 'not a number'\n")
    # a process of its own, as an operator runs it (the CLI sets process-wide log levels)
    result = mailbot_cli("-c", str(bad), "status")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mailbot: config error: ") and len(result.stderr.splitlines()) == 1
