"""IDLE against the real Dovecot: what wakes a poll, and `mailbox.idle_recheck_seconds`.

Dovecot 2.3 tells an idling client of new mail 500 ms after it arrived; a recheck asks
sooner. No wake-up from the server can come in under 500 ms, so a wake counted as
"recheck" is one the server's notice could not have given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from app import World, forward

from mailbot.config import ConfigError, parse
from mailbot.source.idle import FolderSize, IdleWatcher


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_with_a_recheck_new_mail_is_answered_before_the_servers_notice(make_world: Callable[..., World]) -> None:
    from mailbot.daemon import Daemon

    w = make_world(mailbox={"idle_recheck_seconds": 0.05}, schedule={"poll_seconds": 3600})
    daemon = Daemon(w.desk)
    daemon.idle.start()
    try:
        assert daemon.idle.connected.wait(30)
        for i in range(3):  # one at a time: each wakes its own poll
            after = daemon.idle.rechecks + 1
            assert wait_until(lambda after=after: daemon.idle.rechecks > after)  # idling again after the last poll
            w.deliver(forward(f"203.0.113.{10 + i}", f"recheck-{i}", f"sender{i}@s{i}.example"))
            w.smtp.wait_for(i + 1, timeout=30)
    finally:
        daemon.stopping.set()
        daemon.idle.thread.join(timeout=30)
        if daemon.flusher is not None:
            daemon.flusher.join(timeout=30)
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(3)) == [f"sender{i}@s{i}.example" for i in range(3)]
    # each was found by a recheck (a watcher stalled for 450 ms by a loaded machine may, rarely,
    # hear Dovecot's notice first: one of three is proof enough that the recheck path works)
    assert daemon.idle.wakes["recheck"] >= 1
    assert sum(daemon.idle.wakes.values()) == 3


def test_without_a_recheck_the_servers_notice_wakes_the_poll(make_world: Callable[..., World]) -> None:
    from mailbot.daemon import Daemon

    w = make_world(schedule={"poll_seconds": 3600})
    daemon = Daemon(w.desk)
    daemon.idle.start()
    try:
        assert daemon.idle.connected.wait(30)
        t = time.monotonic()
        w.deliver(forward("203.0.113.10", "notice-1", "ann@one.example"))
        w.smtp.wait_for(1, timeout=30)
        took = time.monotonic() - t
    finally:
        daemon.stopping.set()
        daemon.idle.thread.join(timeout=30)
        if daemon.flusher is not None:
            daemon.flusher.join(timeout=30)
    assert dict(daemon.idle.wakes) == {"notice": 1} and daemon.idle.rechecks == 0
    assert took >= 0.45  # Dovecot held its notice back: what the recheck is for


@pytest.mark.parametrize("recheck", [0.0, 0.05])
def test_nothing_new_wakes_no_poll_not_even_mail_moved_out(dovecot: Any, smtp_server: Any, tmp_path: Any,
                                                           recheck: float) -> None:
    from app import imap_config

    config = imap_config(tmp_path, dovecot, smtp_server, "sqlite://",
                         mailbox={"idle_recheck_seconds": recheck}).mailbox
    for i in range(3):
        dovecot.append(forward(f"203.0.113.{10 + i}", f"old-{i}"))
    polls: list[float] = []
    stopping = threading.Event()
    watcher = IdleWatcher(config, lambda: polls.append(time.monotonic()), stopping)
    watcher.start()
    try:
        assert watcher.connected.wait(30)
        # what the desk's own poll does to the inbox: messages moved out (EXPUNGE to the watcher)
        other = dovecot.client()
        other.select_folder("INBOX")
        other.create_folder("Elsewhere")
        other.move(other.search("ALL"), "Elsewhere")
        if recheck:
            assert wait_until(lambda: watcher.rechecks >= 40)
        else:
            time.sleep(1.5)  # past Dovecot's 500 ms notice of the moves
        assert len(polls) == 1  # the catch-up poll at connect, nothing since
        dovecot.append(forward("203.0.113.20", "new-1"))
        assert wait_until(lambda: len(polls) == 2)
    finally:
        stopping.set()
        watcher.thread.join(timeout=30)
    assert sum(watcher.wakes.values()) == 1


def test_mail_that_comes_during_a_poll_wakes_the_next_one_without_waiting_for_more_mail(
        dovecot: Any, smtp_server: Any, tmp_path: Any) -> None:
    from app import imap_config

    config = imap_config(tmp_path, dovecot, smtp_server, "sqlite://").mailbox
    polls: list[float] = []
    stopping = threading.Event()

    def poll() -> None:
        polls.append(time.monotonic())
        if len(polls) == 2:  # the poll woken by the first mail: a second one arrives after its search
            dovecot.append(forward("203.0.113.21", "during-the-poll"))

    watcher = IdleWatcher(config, poll, stopping)
    watcher.start()
    try:
        assert watcher.connected.wait(30)
        dovecot.append(forward("203.0.113.20", "first"))
        assert wait_until(lambda: len(polls) >= 2)
        # Dovecot would not tell the next IDLE of it: without a look after the poll it would wait
        # for a third mail, or Dovecot's own check 30 s on
        assert wait_until(lambda: len(polls) == 3, timeout=15)
    finally:
        stopping.set()
        watcher.thread.join(timeout=30)
    assert dict(watcher.wakes) == {"notice": 1, "after_poll": 1}


def test_the_folder_size_counts_expunges_and_wakes_only_on_growth() -> None:
    size = FolderSize(5)
    assert not size.grew([(b"OK", b"Still here"), (4, b"EXPUNGE"), (3, b"FETCH", (b"FLAGS", ()))])
    assert size.exists == 4
    assert size.grew([(4, b"EXPUNGE"), (4, b"EXISTS")])  # one out, one in: the count alone hides it
    assert not size.grew([(4, b"EXISTS"), (1, b"RECENT")])
    assert size.grew([(5, b"EXISTS")]) and size.exists == 5


@pytest.mark.parametrize(("mailbox", "message"), [
    ({"idle_recheck_seconds": 0.01}, "mailbox.idle_recheck_seconds: 0 (off) or at least 0.05"),
    ({"idle_recheck_seconds": -1}, "mailbox.idle_recheck_seconds: "),
    ({"idle_recheck_seconds": "soon"}, "mailbox.idle_recheck_seconds: "),
    ({"idle_recheck_seconds": 301}, "mailbox.idle_recheck_seconds: "),
    ({"idle_recheck_seconds": 30, "idle_seconds": 20}, "mailbox.idle_recheck_seconds: must be below idle_seconds"),
])
def test_a_bad_recheck_is_refused_naming_the_key(mailbox: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse({"mailbox": {"host": "h", "user": "u", **mailbox}, "outgoing": {"host": "s"}}, environ={})
    assert message in str(e.value)
