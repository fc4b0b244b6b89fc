"""The command source: a real program the operator wrote, JSON on stdin and stdout, with a timeout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mailbot.app import open_listing
from mailbot.config import ConfigError, parse
from mailbot.listing import DelistStatus, Lister, Listing, LookupFailed, PermanentListingError
from mailbot.listing.program import ProgramSource

# A list client as an operator might write it: a JSON file is its list, delists are idempotent by key.
CLIENT = r'''#!/usr/bin/env python3
import json, os, sys
state_file = sys.argv[1]
request = json.load(sys.stdin)
with open(state_file + ".log", "a") as log:
    log.write(json.dumps({"request": request, "env": sorted(k for k in os.environ if k.startswith("MAILBOT_"))}) + "\n")
state = json.load(open(state_file))
ip = request["ip"]
if request["action"] == "lookup":
    entry = state["listed"].get(ip)
    print(json.dumps({"listed": False} if entry is None else {"listed": True, **entry}))
else:
    done = state["keys"].get(request["key"])
    if done:
        print(json.dumps({**done, "replayed": True}))
        sys.exit(0)
    answer = {"status": "delisted" if state["listed"].pop(ip, None) is not None else "not_listed",
              "message": "done by " + request["actor"]}
    state["keys"][request["key"]] = answer
    json.dump(state, open(state_file, "w"))
    print(json.dumps(answer))
'''


def program(tmp_path: Path, body: str, name: str = "prog") -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@pytest.fixture
def client(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"listed": {"203.0.113.45": {"category": "spam", "reason": "traps",
                                                             "since": "2026-11-01T09:00:00Z"}}, "keys": {}}))
    path = tmp_path / "list-client"
    path.write_text(CLIENT)
    path.chmod(0o755)
    return path, state


def lister(tmp_path: Path, command: list[str], **listing: Any) -> Lister:
    config = parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
                    "outgoing": {"transport": "maildir", "maildir_path": "o"},
                    "listing": {"source": "command", "command": command, "retry_base_seconds": 0,
                                **listing}}, base_dir=str(tmp_path), environ={})
    got = open_listing(config, None)
    assert got is not None
    return got


def test_lookup_and_delist_through_the_operator_s_program(client: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_MAILBOX_PASSWORD", "secret")
    _, state = client
    lst = lister(tmp_path, ["./list-client", str(state)])  # relative to the config's folder
    got = lst.lookup("203.0.113.45")
    assert isinstance(got, Listing) and (got.listed, got.category, got.reason, got.source) == (
        True, "spam", "traps", "command")
    first = lst.delist("203.0.113.45", "DL-000007/clock-1", "anna@example.org", "cleaned")
    again = lst.delist("203.0.113.45", "DL-000007/clock-1", "anna@example.org", "cleaned")
    assert (first.status, first.replayed, first.answer) == (DelistStatus.DELISTED, False, "done by anna@example.org")
    assert (again.status, again.replayed) == (DelistStatus.DELISTED, True)
    not_now = lst.lookup("203.0.113.45")
    assert isinstance(not_now, Listing) and not not_now.listed
    log = [json.loads(line) for line in Path(str(state) + ".log").read_text().splitlines()]
    assert log[1]["request"] == {"action": "delist", "ip": "203.0.113.45", "key": "DL-000007/clock-1",
                                 "actor": "anna@example.org", "note": "cleaned"}
    assert all(entry["env"] == [] for entry in log)  # the desk's secrets stay with the desk


def test_a_program_that_overruns_is_killed_with_its_children_and_the_lookup_fails(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    slow = program(tmp_path, f"""
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time, pathlib; time.sleep(1.5); pathlib.Path({str(marker)!r}).touch()"])
time.sleep(30)
""")
    start = time.monotonic()
    got = lister(tmp_path, [str(slow)], timeout_seconds=0.5, lookup_attempts=1).lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and got.temporary
    assert "did not answer within 0.5 s (killed)" in got.error
    assert time.monotonic() - start < 3
    time.sleep(2)
    assert not marker.exists()  # its child went with it


def test_exit_75_is_temporary_and_retried_other_exits_are_permanent(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    flaky = program(tmp_path, f"""
import pathlib, sys
p = pathlib.Path({str(counter)!r})
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
if n < 2:
    print("list busy, try later", file=sys.stderr)
    sys.exit(75)
print('{{"status": "delisted"}}')
""")
    result = lister(tmp_path, [str(flaky)]).delist("203.0.113.45", "k", "staff", None)
    assert result.delisted and counter.read_text() == "3"
    broken = program(tmp_path, 'import sys\nprint("no such list: \\x1b[2J", file=sys.stderr)\nsys.exit(2)\n', "broken")
    with pytest.raises(PermanentListingError, match=r"failed \(exit 2\): no such list") as e:
        lister(tmp_path, [str(broken)]).delist("203.0.113.45", "k", "staff", None)
    assert "\x1b" not in str(e.value) and "\\x1b[2J" in str(e.value)  # shown to staff, never obeyed


@pytest.mark.parametrize(("body", "said"), [
    ('print("hello")', "not JSON"),
    ('print("{\\"listed\\": 1}")', '"listed" must be true or false'),
    ('import sys; sys.stdout.write("x" * 200000)', "wrote more than 65536 bytes"),
])
def test_a_program_s_unreadable_answer_fails_closed(tmp_path: Path, body: str, said: str) -> None:
    got = lister(tmp_path, [str(program(tmp_path, body))]).lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and not got.temporary and said in got.error


def test_a_program_that_cannot_be_run_is_named(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("")
    got = ProgramSource([str(not_executable)], 1.0)
    with pytest.raises(PermanentListingError, match=r"cannot run .*plain: Permission denied"):
        got.lookup("203.0.113.45")
    with pytest.raises(ConfigError, match=r"listing\.command: .*missing does not exist"):
        lister(tmp_path, ["./missing"])


def test_a_program_that_never_reads_stdin_still_answers(tmp_path: Path) -> None:
    quiet = program(tmp_path, 'import os\nos.close(0)\nprint(\'{"listed": false}\')\n')
    got = lister(tmp_path, [str(quiet)]).lookup("203.0.113.45")
    assert isinstance(got, Listing) and not got.listed
