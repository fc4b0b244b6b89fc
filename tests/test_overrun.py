"""One message never stalls the desk: hostile text is read in linear time, and a message whose
extraction runs past `extraction.seconds` is quarantined with the reason while the mail behind it
flows (issue #12). Against real Dovecot, SMTP, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import World, forward, imap_toml, mailbot_cli, running
from hostile import build, many_parts
from sqlmodel import Session, select
from test_daemon import stop

from mailbot.desk.extractor import ExtractorUnavailable
from mailbot.store.engine import make_engine
from mailbot.store.tables import StoredMessage

GOOD = [f"good{i}@s{i}.example" for i in range(3)]


def hostile(raw: bytes, tag: str) -> bytes:
    return raw.replace(b"MIME-Version: 1.0\r\n", f"Message-ID: <{tag}@hostile.example>\r\nMIME-Version: 1.0\r\n"
                       .encode(), 1)


def workers_tagged(tag: str) -> list[int]:
    """Extraction workers whose environment carries `tag` (only the ones a test started)."""
    return [pid for pid, _, environ in running("mailbot.desk.extraction_worker")
            if f"EXTRACTION_TEST_TAG={tag}".encode() in environ]


def wait_for_recipients(smtp: Any, wanted: list[str], timeout: float) -> float:
    """Seconds until a mail to each of `wanted` has arrived."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if set(wanted) <= {r for m in smtp.messages for r in m.rcpt_tos}:
            return time.monotonic() - start
        time.sleep(0.1)
    got = sorted({r for m in smtp.messages for r in m.rcpt_tos})
    raise AssertionError(f"within {timeout} s only {got} were answered, expected {wanted}")


def test_huge_hostile_mail_does_not_hold_up_the_good_forwards_behind_it_in_the_daemon(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    # Before: "A" * n before the rejection line took 4 s at 40 KB (quadratic): this one, minutes.
    # (300 KB: the code at its end is within the 400,000 characters of a part that are read.)
    dovecot.append(hostile(build("a-run", 300_000, spread=False), "a-run"))
    dovecot.append(hostile(many_parts(5_000_000), "parts"))  # seconds in the MIME parser itself
    for i, sender in enumerate(GOOD):
        dovecot.append(forward(f"203.0.113.{70 + i}", f"good-{i}", sender))
    tag = uuid.uuid4().hex
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 3600})
    proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password,
                                 "EXTRACTION_TEST_TAG": tag})
    try:
        took = wait_for_recipients(smtp_server, GOOD, timeout=60)
        assert workers_tagged(tag), "extraction runs in a worker of the daemon"
        deadline = time.monotonic() + 30
        while len(dovecot.uids("INBOX")) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert took < 30, out  # the daemon's start included
    assert not workers_tagged(tag), "the daemon ends its extraction worker when it exits"
    # each hostile mail was processed, or quarantined with the reason; none is left behind
    assert dovecot.uids("INBOX") == []
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = [(m.message_id, m.state, m.outcome) for m in session.exec(select(StoredMessage)).all()]
    finally:
        engine.dispose()
    outcomes = {m: (s, o) for m, s, o in rows}
    for mid in ("<a-run@hostile.example>", "<parts@hostile.example>"):
        state, outcome = outcomes[mid]
        assert state == "processed" or (state == "quarantined" and "quarantined: extraction" in outcome), outcome
    assert [outcomes[f"<good-{i}@forwarder.example>"][0] for i in range(3)] == ["processed"] * 3


def test_a_message_whose_extraction_runs_past_its_time_is_quarantined_and_the_next_one_flows(
        make_world: Callable[..., World]) -> None:
    w = make_world(extraction={"seconds": 0.5})
    w.deliver(hostile(many_parts(5_000_000), "slow"))  # the parser alone takes seconds
    w.deliver(forward("203.0.113.80", "after-slow", "ann@one.example"))
    started = time.monotonic()
    polled, _ = w.run()
    assert time.monotonic() - started < 20
    assert (polled.process.processed, polled.process.quarantined) == (1, 1)
    slow, good = w.messages()
    assert slow.state == "quarantined"
    assert slow.outcome == "quarantined: extraction took longer than 0.5 s (extraction.seconds)"
    assert good.state == "processed" and [t.ip for t in w.tickets()] == ["203.0.113.80"]
    assert w.smtp.wait_for(1)[0].rcpt_tos == ["ann@one.example"]
    assert len(w.imap.uids("Quarantine")) == 1 and len(w.imap.uids("Processed")) == 1


def test_an_overrun_counts_as_an_extraction_failure_in_the_metrics(make_world: Callable[..., World]) -> None:
    # docs/operators.md promises mailbot_extraction_failures_total; it stayed at 0 whatever came in
    from mailbot import metrics

    def failures() -> float:
        return metrics.REGISTRY.get_sample_value("mailbot_extraction_failures_total") or 0.0

    w = make_world(extraction={"seconds": 0.5})
    before = failures()
    w.deliver(hostile(many_parts(5_000_000), "slow-metric"))
    w.deliver(forward("203.0.113.84", "read-fine", "ann@one.example"))
    polled, _ = w.run()
    assert (polled.process.processed, polled.process.quarantined) == (1, 1)
    assert failures() - before == 1  # the hostile one; the forward that was read does not count


def test_a_killed_extraction_worker_is_replaced_and_mail_goes_on(world: World) -> None:
    world.deliver(forward("203.0.113.81", "before-kill", "ann@one.example"))
    world.run()
    pid = world.desk.extractor.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    world.deliver(forward("203.0.113.82", "after-kill", "bob@two.example"))
    polled, _ = world.run()
    assert polled.process.processed == 1
    assert [t.ip for t in world.tickets()] == ["203.0.113.81", "203.0.113.82"]
    assert world.desk.extractor.started == 2 and world.desk.extractor.pid not in (None, pid)


def test_poll_once_leaves_no_extraction_worker_behind(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                                      database_url: str) -> None:
    dovecot.append(forward("203.0.113.83", "once", "ann@one.example"))
    tag = uuid.uuid4().hex
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    r = mailbot_cli("-c", str(path), "poll", "--once",
                    env={"MAILBOT_MAILBOX_PASSWORD": dovecot.password, "EXTRACTION_TEST_TAG": tag})
    assert r.returncode == 0, r.stderr
    assert "processed 1" in r.stdout
    assert workers_tagged(tag) == []


def test_a_worker_that_cannot_start_fails_the_poll_and_never_quarantines_good_mail(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # the system's fault, not the message's: no attempt counted, the poll fails, the mail waits
    world.deliver(forward("203.0.113.5", "waits", "ann@one.example"))
    world.desk.close()  # the next extraction starts a new worker
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    for _ in range(4):
        with pytest.raises(ExtractorUnavailable):
            world.run()
    [msg] = world.messages()
    assert (msg.state, msg.attempts) == ("stored", 0)
    monkeypatch.undo()
    world.run()
    [msg] = world.messages()
    assert msg.state == "processed" and world.smtp.wait_for(1)[0].rcpt_tos == ["ann@one.example"]
