"""The extraction worker: the same findings as in the process, a deadline and a memory limit that
hold whatever the mail does, and a worker that is replaced whenever it is killed."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import sample
from hostile import build, many_parts

from mailbot.desk.extractor import ExtractionOverrun, Extractor
from mailbot.extraction import extract

SAMPLES = ["01-banned-sender-attached.eml", "04-no-code.eml", "06-ipv6-thunderbird.eml"]


@pytest.fixture
def extractor() -> Iterator[Extractor]:
    ex = Extractor(seconds=30, memory_mb=1024)
    yield ex
    ex.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_mail_read_in_the_worker_is_read_as_in_the_process(extractor: Extractor) -> None:
    for name in SAMPLES:
        assert extractor.run(sample(name)) == extract(sample(name)), name
    assert extractor.started == 1  # one worker for every mail


def test_the_worker_sends_the_findings_as_the_message_row_keeps_them(extractor: Extractor) -> None:
    for name in SAMPLES:
        read = extractor.run(sample(name))
        assert read.written is not None, name  # written in the worker, not by the desk
        assert read.json_text() == json.dumps(extract(sample(name)).as_json()), name


def test_a_mail_past_the_deadline_is_an_overrun_and_the_next_mail_gets_a_fresh_worker() -> None:
    ex = Extractor(seconds=0.5, memory_mb=1024)
    try:
        ex.run(sample(SAMPLES[0]))
        first = ex.pid
        assert first is not None
        started = time.monotonic()
        with pytest.raises(ExtractionOverrun) as overrun:
            ex.run(many_parts(5_000_000))  # the parser alone takes seconds: one step, no budget inside it
        assert time.monotonic() - started < 3
        assert overrun.value.reason == "extraction took longer than 0.5 s (extraction.seconds)"
        assert gone(first)
        assert ex.run(sample(SAMPLES[0])).status == "5.7.511"
        assert ex.started == 2 and ex.pid != first
    finally:
        ex.close()


def test_a_mail_that_needs_more_memory_than_allowed_is_an_overrun_and_the_next_is_read() -> None:
    ex = Extractor(seconds=60, memory_mb=128)
    try:
        with pytest.raises(ExtractionOverrun) as overrun:
            ex.run(many_parts(20_000_000))  # about 360 MiB
        assert overrun.value.reason == "extraction needed more than 128 MiB (extraction.memory_mb)"
        assert ex.run(sample(SAMPLES[0])).status == "5.7.511"
        assert ex.started == 2
    finally:
        ex.close()


def test_a_worker_killed_under_a_mail_is_replaced_and_the_mail_read_by_the_next(extractor: Extractor) -> None:
    extractor.run(sample(SAMPLES[0]))
    first = extractor.pid
    assert first is not None
    threading.Timer(0.3, os.kill, (first, signal.SIGKILL)).start()
    found = extractor.run(build("dsn-records", 5_000_000, spread=True))  # reads for its 1.5 s budget
    assert found.status == "5.1.1"
    assert extractor.started == 2 and extractor.pid not in (None, first)


def test_a_mail_that_kills_its_worker_twice_is_an_overrun(extractor: Extractor) -> None:
    stop = threading.Event()

    def kill_every_worker() -> None:
        seen: set[int] = set()
        while not stop.is_set():
            pid = extractor.pid
            if pid is not None and pid not in seen:
                seen.add(pid)
                time.sleep(0.6)  # started (0.1 s) and under the mail (1.5 s)
                if stop.is_set():
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    extractor.run(sample(SAMPLES[0]))
    killer = threading.Thread(target=kill_every_worker)
    killer.start()
    try:
        with pytest.raises(ExtractionOverrun) as overrun:
            extractor.run(build("dsn-records", 5_000_000, spread=True))
    finally:
        stop.set()
        killer.join()
    assert overrun.value.reason == "the extraction worker died on it twice (killed by signal 9)"
    assert extractor.run(sample(SAMPLES[0])).status == "5.7.511"


def test_a_worker_killed_while_idle_is_replaced_at_the_next_mail(extractor: Extractor) -> None:
    extractor.run(sample(SAMPLES[0]))
    first = extractor.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert extractor.run(sample(SAMPLES[0])).status == "5.7.511"
    assert extractor.started == 2


def test_ctrl_c_in_the_terminal_does_not_stop_the_worker(extractor: Extractor) -> None:
    extractor.run(sample(SAMPLES[0]))
    pid = extractor.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)  # the daemon decides what Ctrl-C means
    time.sleep(0.2)
    assert extractor.run(sample(SAMPLES[0])).status == "5.7.511"
    assert extractor.pid == pid


def test_the_worker_gets_no_configuration_or_secret_from_the_environment(
        extractor: Extractor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_MAILBOX_PASSWORD", "imap-secret")
    monkeypatch.setenv("PGPASSWORD", "db-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    extractor.run(sample(SAMPLES[0]))
    environ = Path(f"/proc/{extractor.pid}/environ").read_bytes()
    assert b"imap-secret" not in environ and b"db-secret" not in environ
    assert b"LANG=C.UTF-8" in environ


def test_close_ends_the_worker_and_so_does_dropping_the_extractor() -> None:
    ex = Extractor(seconds=5, memory_mb=1024)
    ex.run(sample(SAMPLES[0]))
    pid = ex.pid
    assert pid is not None
    ex.close()
    assert gone(pid) and ex.pid is None

    dropped = Extractor(seconds=5, memory_mb=1024)
    dropped.run(sample(SAMPLES[0]))
    pid = dropped.pid
    assert pid is not None
    del dropped
    gc.collect()
    assert gone(pid)


# -- reading ahead, several workers (issue #16) ------------------------------------------------

def test_mails_handed_ahead_are_read_side_by_side_and_each_answer_goes_to_its_mail() -> None:
    ex = Extractor(seconds=30, memory_mb=1024, workers=2)
    try:
        mails = [sample(name) for name in SAMPLES] * 2
        ex.ahead(mails[:3], mails[3:])
        assert ex.started == 2 and len(ex.pids) == 2  # both workers had mail
        for raw in reversed(mails):  # asked in any order
            assert ex.run(raw) == extract(raw)
    finally:
        ex.close()


def test_one_mail_at_a_time_goes_to_the_first_worker_only() -> None:
    ex = Extractor(seconds=30, memory_mb=1024, workers=2)
    try:
        for name in SAMPLES:
            ex.run(sample(name))
        assert ex.started == 1 and ex.pids == [ex.pid]
    finally:
        ex.close()


def test_a_mail_read_ahead_is_not_read_again_when_asked_for() -> None:
    ex = Extractor(seconds=30, memory_mb=1024)
    try:
        slow = build("dsn-records", 5_000_000, spread=True)  # reads for its 1.5 s budget
        ex.ahead([slow])
        time.sleep(2.5)  # read by now
        started = time.monotonic()
        assert ex.run(slow).status == "5.1.1"
        assert time.monotonic() - started < 0.5
    finally:
        ex.close()


def test_an_overrun_behind_and_before_other_mails_costs_only_itself() -> None:
    ex = Extractor(seconds=0.5, memory_mb=1024)  # one worker: the mails queue behind each other
    try:
        good = sample(SAMPLES[0])
        slow = many_parts(5_000_000)
        other = sample(SAMPLES[2])
        ex.ahead([good, slow, other])
        first = ex.pid
        assert ex.run(good).status == "5.7.511"
        with pytest.raises(ExtractionOverrun) as overrun:
            ex.run(slow)
        assert overrun.value.reason == "extraction took longer than 0.5 s (extraction.seconds)"
        assert ex.run(other) == extract(other)  # sent again to the worker that replaced the ended one
        assert ex.started == 2 and first is not None and gone(first)
    finally:
        ex.close()


def test_a_worker_killed_with_mails_queued_hands_them_all_to_its_successor() -> None:
    ex = Extractor(seconds=30, memory_mb=1024)
    try:
        slow = build("dsn-records", 5_000_000, spread=True)
        rest = [sample(name) for name in SAMPLES]
        ex.ahead([slow, *rest])
        first = ex.pid
        assert first is not None
        threading.Timer(0.5, os.kill, (first, signal.SIGKILL)).start()
        assert ex.run(slow).status == "5.1.1"  # the one it died under, read once more
        assert [ex.run(raw) for raw in rest] == [extract(raw) for raw in rest]
        assert ex.started == 2
    finally:
        ex.close()


def test_mails_no_longer_wanted_are_forgotten() -> None:
    ex = Extractor(seconds=30, memory_mb=1024)
    try:
        a, b = sample(SAMPLES[0]), sample(SAMPLES[1])
        ex.ahead([a])
        ex.ahead([b])  # a's batch went elsewhere (another daemon claimed it)
        assert list(ex._ahead) == [b]
        assert ex.run(b) == extract(b) and ex.run(a) == extract(a)  # a is read afresh when asked
    finally:
        ex.close()
