"""`mailbot listing ...` as staff run it: a separate process on a real database."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from app import mailbot_cli, write_config
from sqlmodel import Session, select

from mailbot.store import schema
from mailbot.store.engine import make_engine
from mailbot.store.listing_tables import ListingEntry


@pytest.fixture
def toml(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path / "mailbot.toml", {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "maildir", "maildir_path": "outbox"},
        "database": {"url": database_url},
        "desk": {"timezone": "Europe/Berlin"},
        "listing": {"source": "table"},
    })


def listing(toml: Path, *args: str) -> Any:
    return mailbot_cli("-c", str(toml), "listing", *args)


def test_add_show_remove_show(toml: Path) -> None:
    r = listing(toml, "add", "203.0.113.45", "--category", "spam", "--reason", "hit our traps 40 times",
                "--source", "traps", "--since", "2026-11-01T09:00:00Z")
    assert (r.returncode, r.stdout.strip()) == (0, "listed 203.0.113.45/32 since 2026-11-01 10:00 CET"), r.stderr
    assert r.stderr == ""
    shown = listing(toml, "show", "203.0.113.45")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("203.0.113.45: listed as 203.0.113.45/32 since 2026-11-01 10:00 CET, "
                                   "category spam, source traps")
    assert "reason (staff only): hit our traps 40 times" in shown.stdout

    gone = listing(toml, "remove", "203.0.113.45", "--reason", "cleaned up, confirmed by phone")
    assert (gone.returncode, gone.stdout.strip()) == (0, "delisted 203.0.113.45/32")
    after = listing(toml, "show", "203.0.113.45")
    lines = after.stdout.splitlines()
    assert lines[0] == "203.0.113.45: not listed"
    assert lines[1].startswith("delisted before: 1 time(s), last ")
    assert "listed      203.0.113.45/32  by " in lines[3] and "hit our traps 40 times" in lines[3]
    assert "delisted    203.0.113.45/32  by " in lines[4] and "cleaned up, confirmed by phone" in lines[4]
    data = json.loads(listing(toml, "show", "203.0.113.45", "--json").stdout)
    assert data["listed"] is False and [h["action"] for h in data["history"]] == ["listed", "delisted"]
    assert data["history"][0]["since"] == "2026-11-01T09:00:00Z"


def test_an_ip_inside_a_listed_network_shows_the_network_and_cannot_be_removed_alone(toml: Path) -> None:
    assert listing(toml, "add", "198.51.100.0/24", "--category", "botnet").returncode == 0
    shown = listing(toml, "show", "198.51.100.7")
    assert shown.stdout.startswith("198.51.100.7: listed as 198.51.100.0/24")
    r = listing(toml, "remove", "198.51.100.7", "--reason", "x")
    assert r.returncode == 1
    assert r.stderr.strip() == "mailbot: 198.51.100.7/32 is not listed (it is inside 198.51.100.0/24: remove that)"
    again = listing(toml, "add", "198.51.100.0/24")
    assert again.returncode == 1 and "198.51.100.0/24 is already listed" in again.stderr
    bad = listing(toml, "add", "198.51.100.5/24")
    assert bad.returncode == 1 and "did you mean 198.51.100.0/24?" in bad.stderr
    assert listing(toml, "remove", "198.51.100.7").returncode == 2  # --reason is required (click usage error)


CSV = """\ufeffnetwork,category,reason,source,since
203.0.113.45,spam,"hit our traps, 40 times",traps,2026-11-01T09:00:00Z
198.51.100.0/24,botnet,,complaints,2026-10-01
2001:db8:5::/48,spam,v6 range,,
"""


def test_import_then_export_round_trips(toml: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(CSV, encoding="utf-8")
    r = listing(toml, "import", str(tmp_path / "in.csv"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported 3 listing(s) from ")
    out = listing(toml, "export")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(x["network"], x["category"], x["reason"], x["source"]) for x in rows] == [
        ("198.51.100.0/24", "botnet", "", "complaints"),
        ("203.0.113.45/32", "spam", "hit our traps, 40 times", "traps"),
        ("2001:db8:5::/48", "spam", "v6 range", ""),
    ]
    assert rows[0]["since"] == "2026-10-01T00:00:00Z" and rows[1]["since"] == "2026-11-01T09:00:00Z"
    (tmp_path / "out.csv").write_text(out.stdout)
    again = listing(toml, "import", str(tmp_path / "out.csv"))
    assert again.returncode == 0 and "imported 0 listing(s)" in again.stdout and "3 already listed" in again.stdout
    assert listing(toml, "export").stdout == out.stdout


def test_a_file_with_bad_lines_imports_nothing_and_names_every_line(toml: Path, tmp_path: Path) -> None:
    assert listing(toml, "add", "192.0.2.9", "--since", "2026-11-02").returncode == 0
    (tmp_path / "bad.csv").write_text(
        "network,category,reason\n203.0.113.45,spam,ok\n203.0.113.5/24,spam,x\nnot-an-ip,,\n"
        "203.0.113.45,spam,twice\n192.0.2.1,spam,\"line\nbreak\"\n")
    r = listing(toml, "import", str(tmp_path / "bad.csv"))
    assert r.returncode == 1
    assert r.stderr.startswith("mailbot: nothing imported: 4 problem(s): line 3: ")
    for said in ("line 3: '203.0.113.5/24' is not a network", "line 4: 'not-an-ip' is not an IP address",
                 "line 5: 203.0.113.45/32 again (first on line 2)", "line 7: reason has control characters"):
        assert said in r.stderr
    assert listing(toml, "export").stdout.splitlines() == ["network,category,reason,source,since",
                                                           "192.0.2.9/32,,,,2026-11-02T00:00:00Z"]
    (tmp_path / "cols.csv").write_text("ip,category\n203.0.113.45,spam\n")
    cols = listing(toml, "import", str(tmp_path / "cols.csv"))
    assert cols.returncode == 1 and "the header must name the columns" in cols.stderr


def test_terminal_escapes_never_reach_the_terminal(toml: Path, database_url: str) -> None:
    """Refused when typed; and whatever else wrote a row, `show` prints it escaped."""
    r = listing(toml, "add", "203.0.113.45", "--reason", "evil \x1b]2;pwned\x07 title")
    assert r.returncode == 1 and "reason has control characters" in r.stderr
    assert listing(toml, "add", "203.0.113.45", "--reason", "plain").returncode == 0
    engine = make_engine(database_url)
    with Session(engine) as s:
        entry = s.exec(select(ListingEntry)).one()
        entry.reason, entry.category = "evil \x1b[2J\u202e", "x\ny"
        s.add(entry)
        s.commit()
    engine.dispose()
    shown = listing(toml, "show", "203.0.113.45")
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
    assert "evil \\x1b[2J\\u202e" in shown.stdout and "category x\\ny" in shown.stdout
    exported = listing(toml, "export").stdout
    assert "\x1b" not in exported and "\\x1b[2J" in exported


def test_a_config_without_the_table_source_warns(tmp_path: Path, database_url: str) -> None:
    toml = write_config(tmp_path / "other.toml", {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "maildir", "maildir_path": "outbox"},
        "database": {"url": database_url}})
    r = listing(toml, "add", "203.0.113.45")
    assert r.returncode == 0
    assert "warning: the config has no [listing] source: the desk does not ask this table" in r.stderr


def test_show_and_export_never_change_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    schema.upgrade(engine, "0010")
    toml = write_config(tmp_path / "mailbot.toml", {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "maildir", "maildir_path": "outbox"},
        "database": {"url": url}, "listing": {"source": "table"}})
    for args in (("show", "203.0.113.45"), ("export",)):
        r = listing(toml, *args)
        assert r.returncode == 1 and "the database schema is 0010" in r.stderr and "mailbot db upgrade" in r.stderr
    assert schema.current(engine) == "0010"
    assert listing(toml, "add", "203.0.113.45").returncode == 0  # a command that writes upgrades
    assert schema.current(engine) == schema.head()
    engine.dispose()


def test_an_unreachable_database_is_one_line_and_exit_3(tmp_path: Path) -> None:
    toml = write_config(tmp_path / "mailbot.toml", {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "maildir", "maildir_path": "outbox"},
        "database": {"url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}, "listing": {"source": "table"}})
    r = listing(toml, "show", "203.0.113.45")
    assert r.returncode == 3
    assert len(r.stderr.strip().splitlines()) == 1 and "PostgreSQL nobody@127.0.0.1:1/none" in r.stderr


def test_the_group_lists_its_commands() -> None:
    r = mailbot_cli("listing", "--help")
    assert r.returncode == 0
    for name in ("add", "remove", "show", "import", "export"):
        assert f"  {name} " in r.stdout


def test_a_large_import_is_one_transaction_and_reads_back_whole(toml: Path, tmp_path: Path) -> None:
    lines = ["network,category"] + [f"10.{i // 256}.{i % 256}.0/24,bulk" for i in range(1500)]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    assert listing(toml, "add", "10.0.7.0/24").returncode == 0  # one of them is listed already
    r = listing(toml, "import", str(tmp_path / "big.csv"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported 1499 listing(s)") and "1 already listed" in r.stdout
    assert len(listing(toml, "export").stdout.splitlines()) == 1 + 1500
