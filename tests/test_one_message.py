"""One message never stops the desk: no column length, and no database error
one message's data causes, decides whether mail is processed.

On SQLite and PostgreSQL (PostgreSQL enforces lengths; SQLite never did),
through the command line an operator runs.
"""

from __future__ import annotations

import base64
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable

from app import CliDesk, World, forward
from sqlalchemy import text
from sqlmodel import Session, select

from mailbot.store.tables import StoredMessage

LONG_ID = "<" + "x" * (700 - len("<@forwarder.example>")) + "@forwarder.example>"
# valid: a 60-character local part, labels under 64 characters
LONG_FROM = "l" * 60 + "@" + "d" * 50 + "." + "e" * 50 + "." + "f" * 49 + ".example"


def test_a_700_character_message_id_and_a_220_character_from_are_processed_and_acknowledged(
        cli_desk: Callable[..., CliDesk]) -> None:
    assert (len(LONG_ID), len(LONG_FROM)) == (700, 220)
    desk = cli_desk()
    w = desk.world
    long_id = forward("203.0.113.10", "long-id", "ann@one.example").replace(
        b"<long-id@forwarder.example>", LONG_ID.encode())
    w.deliver(long_id)
    w.deliver(forward("203.0.113.20", "long-from", LONG_FROM))
    w.deliver(forward("203.0.113.30", "next-1", "bob@two.example"))

    polled = desk.poll_once()
    assert polled.returncode == 0, polled.stderr
    assert "Traceback" not in polled.stderr and "quarantined 0" in polled.stdout

    messages = w.messages()
    assert [m.state for m in messages] == ["processed"] * 3
    assert messages[0].message_id == LONG_ID  # whole, as written
    by_ip = {t.ip: t for t in w.tickets()}
    assert set(by_ip) == {"203.0.113.10", "203.0.113.20", "203.0.113.30"}
    assert by_ip["203.0.113.20"].sender == LONG_FROM
    assert LONG_FROM in {e.actor for e in w.events(by_ip["203.0.113.20"])}
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(3)) == sorted(["ann@one.example", LONG_FROM,
                                                                         "bob@two.example"])
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 3

    # the same mail again is recognised by its (hashed) identity; a reply quoting the long id finds its ticket
    w.deliver(long_id)
    w.deliver(b"From: ann@one.example\r\nTo: delist@example.org\r\nSubject: any news?\r\n"
              b"Message-ID: <news-1@one.example>\r\nIn-Reply-To: " + LONG_ID.encode() + b"\r\n\r\nHello?\r\n")
    again = desk.poll_once()
    assert again.returncode == 0, again.stderr
    assert len(w.tickets()) == 3 and len(w.messages()) == 4
    assert w.messages()[-1].ticket_id == by_ip["203.0.113.10"].id


REFUSED_BODY = b"REFUSED-BY-THE-DATABASE"


def refuse_at_insert(world: World) -> None:
    """A real database refusal of one message's data: a trigger refusing a Message-ID, and any bytes
    holding REFUSED_BODY (PostgreSQL and SQLite raise their own errors, as for a value too long)."""
    marker = REFUSED_BODY.hex()
    with world.desk.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"""
                CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN
                  IF NEW.message_id LIKE '%refused-id%' THEN RAISE EXCEPTION 'message_id refused'; END IF;
                  IF position('\\x{marker}'::bytea in NEW.raw) > 0 THEN RAISE EXCEPTION 'raw refused'; END IF;
                  RETURN NEW; END $$ LANGUAGE plpgsql"""))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON message FOR EACH ROW EXECUTE FUNCTION refuse()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse_id BEFORE INSERT ON message WHEN NEW.message_id LIKE "
                              "'%refused-id%' BEGIN SELECT RAISE(ABORT, 'message_id refused'); END"))
            conn.execute(text(f"CREATE TRIGGER refuse_raw BEFORE INSERT ON message WHEN instr(NEW.raw, X'{marker}') "
                              "> 0 BEGIN SELECT RAISE(ABORT, 'raw refused'); END"))


def test_a_message_the_database_refuses_is_stored_without_the_field_or_quarantined_after_three_polls(
        world: World) -> None:
    refuse_at_insert(world)
    world.deliver(forward("203.0.113.10", "refused-id", "ann@one.example"))
    world.deliver(forward("203.0.113.20", "refused-body", "eve@three.example") + REFUSED_BODY + b"\n")
    world.deliver(forward("203.0.113.30", "next-1", "bob@two.example"))

    for poll in (1, 2, 3):
        polled, _ = world.run()  # raises nothing
        assert polled.fetch.failed == 1, poll
    assert polled.process.quarantined == 1

    with Session(world.desk.engine) as s:
        rows = {m.uid: m for m in s.exec(select(StoredMessage)).all()}
        first, second, third = (rows[u] for u in sorted(rows))
    # the refused Message-ID: stored without it (identified by its content), processed, answered
    assert (first.state, first.message_id, first.identity[:7]) == ("processed", None, "sha256:")
    assert b"<refused-id@forwarder.example>" in first.raw  # the bytes are whole
    # the refused bytes: counted against the UID, quarantined with the database's reason, kept on the server
    assert second.state == "quarantined" and second.message_id == "<refused-body@forwarder.example>"
    assert second.outcome is not None and second.outcome.startswith("quarantined: fetching failed 3 times: ")
    assert "raw refused" in second.outcome
    # the database's error is recorded without the statement's values: the mail is not quoted in it
    assert REFUSED_BODY.decode() not in second.outcome and "hidden" in second.outcome
    assert third.state == "processed"
    assert world.imap.uids("INBOX") == [] and len(world.imap.uids("Quarantine")) == 1
    assert sorted(r.rcpt_tos[0] for r in world.smtp.wait_for(2)) == ["ann@one.example", "bob@two.example"]


# -- memory is bounded by configuration, not by the mail ------------------------------------------

MiB = 1024 * 1024
HEADROOM = 200 * MiB
"""Address space the limited polls get above what a poll of ordinary mail peaks at."""
PEAK = ("import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write('\\nVmPeak ' + next(l.split()[1] for l in open('/proc/self/status')"
        " if l.startswith('VmPeak')) + '\\n'))\n"
        "sys.argv = ['mailbot', *sys.argv[1:]]\n"
        "runpy.run_module('mailbot', run_name='__main__')\n")


def large_forward(ip: str, tag: str, sender: str, size: int) -> bytes:
    """A 5.7.511 forward with a base64 attachment making it about `size` bytes."""
    blob = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    raw = forward(ip, tag, sender)
    return raw.replace(b"--=_fwd_4814c9673ed3c6617e191ea7--",
                       b"--=_fwd_4814c9673ed3c6617e191ea7\nContent-Type: application/octet-stream; name=\"logs.bin\"\n"
                       b"Content-Transfer-Encoding: base64\n\n" + blob + b"\n--=_fwd_4814c9673ed3c6617e191ea7--")


def limited_poll(desk: CliDesk, limit: int) -> subprocess.CompletedProcess[str]:
    """`mailbot poll --once` in a process whose address space is capped at `limit` bytes."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", "mailbot", "-c", str(desk.path), "poll", "--once"],
                          capture_output=True, text=True, timeout=300, preexec_fn=cap,
                          env={**os.environ, **desk.env()})


def test_under_an_address_space_limit_large_mail_flows_and_a_message_too_large_to_fetch_is_quarantined(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk(mailbox={"max_message_bytes": 512 * MiB})  # the cap lets the huge one be fetched whole
    w = desk.world
    # what a poll of ordinary mail peaks at, in this environment
    w.deliver(forward("203.0.113.1", "first-1", "first@one.example"))
    calibrate = subprocess.run([sys.executable, "-c", PEAK, "-c", str(desk.path), "poll", "--once"],
                               capture_output=True, text=True, timeout=120, env={**os.environ, **desk.env()})
    assert calibrate.returncode == 0, calibrate.stderr
    limit = int(calibrate.stderr.rsplit("VmPeak ", 1)[1].split()[0]) * 1024 + HEADROOM

    senders = ["first@one.example"]
    for i in range(12):  # 96 MB of large mail, more than the headroom several times over once in memory
        senders.append(f"large{i}@big.example")
        w.deliver(large_forward(f"198.51.100.{i + 1}", f"large-{i}", senders[-1], 8 * MiB))
        if i % 4 == 3:
            senders.append(f"small{i}@small.example")
            w.deliver(forward(f"192.0.2.{i + 1}", f"small-{i}", senders[-1]))
    huge = w.deliver(large_forward("203.0.113.99", "huge-1", "huge@big.example", 256 * MiB))
    senders.append("after@small.example")
    w.deliver(forward("192.0.2.99", "after-1", senders[-1]))

    for poll in (1, 2, 3):
        r = limited_poll(desk, limit)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        if poll == 1:  # everything else was taken in, answered and moved at once
            assert w.imap.uids("INBOX") == [huge]
            assert sorted(rcpt for m in w.smtp.wait_for(len(senders)) for rcpt in m.rcpt_tos) == sorted(senders)
            assert len(w.tickets()) == len(senders)
    # the one that cannot be fetched: tried alone once a poll, quarantined after three, kept on the server
    [row] = [m for m in w.messages() if m.state == "quarantined"]
    assert row.message_id == "<huge-1@forwarder.example>" and row.size > 256 * MiB
    # out of memory, found by Python (fetching) or by the database driver (storing: libpq's buffer)
    assert row.outcome is not None and re.search(
        r"fetching failed 3 times: (MemoryError|OperationalError: .*cannot allocate memory)", row.outcome, re.S)
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Quarantine")) == 1
    assert "quarantined 1" in r.stdout
