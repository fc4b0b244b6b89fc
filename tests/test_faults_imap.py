"""IMAP faults: a connection cut mid-FETCH, a server that stalls, a server
that cannot be reached again, Dovecot restarted in the middle of a poll, a
message the server will not hand over.

A fetch that breaks the connection is met with a new connection, and the
batch is fetched again one message at a time in the same poll. A poll that
cannot go on (the server does not answer again, or the connection breaks
while marking) fails with an error naming the server and the user; the
next poll recovers. Nothing is lost or doubled. A message that breaks the
connection by itself is counted against it, and quarantined after three
polls while the rest of the mailbox flows.

A small TCP proxy between mailbot and Dovecot makes the network faults.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from app import World, forward

from mailbot.desk import worker as process
from mailbot.source.base import SourceError


class FaultProxy:
    """127.0.0.1:port → target. The next connection meets `fault` after `after` bytes from the server:
    "cut" closes both sides, "stall" stops passing the server's bytes on. Later connections pass through."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.fault: str | None = None
        self.after = 0
        self.refusing = False
        """New connections are closed at once (the server is gone)."""
        self.rewrite: Callable[[bytes], bytes] | None = None
        """Applied to what the server says, a whole number of lines at a time (a server that speaks oddly)."""
        self.faulted = threading.Event()
        self.client_closed = threading.Event()
        """Set when mailbot closed a connection (its side ended)."""
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, fault: str, after: int) -> None:
        self.fault, self.after = fault, after
        self.faulted.clear()

    refusing_after_fault = False
    """Once the fault happened, refuse new connections (until `refusing` is cleared)."""

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            fault, self.fault = self.fault, None
            threading.Thread(target=self._pump, args=(client, upstream, None, 0), kwargs={"ends": self.client_closed},
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, fault, self.after, self.rewrite),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, fault: str | None, after: int,
              rewrite: Callable[[bytes], bytes] | None = None, ends: threading.Event | None = None) -> None:
        passed = 0
        held = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    if ends is not None:
                        ends.set()
                    break
                if rewrite is not None:
                    lines, end, held = (held + data).rpartition(b"\r\n")
                    data = rewrite(lines + end) if end else b""
                    if not data:
                        continue
                if fault and passed + len(data) >= after:
                    dst.sendall(data[: max(after - passed, 0)])
                    if self.refusing_after_fault:
                        self.refusing = True
                    self.faulted.set()
                    if fault == "stall":
                        self.stopping.wait()  # hold the connection open, say nothing more
                    break
                dst.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close_connections(self) -> None:
        """Cut every connection made so far (a server restart); new ones pass through."""
        sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def proxy(dovecot: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(dovecot.host, dovecot.port)
    try:
        yield p
    finally:
        p.close()


def test_a_server_that_sends_no_uidvalidity_is_refused_by_name_and_its_connection_closed(
        make_world, proxy: FaultProxy) -> None:  # type: ignore[no-untyped-def]
    # without UIDVALIDITY a UID says nothing lasting: mailbot refuses to take mail from such a folder
    world: World = make_world(mailbox={"port": proxy.port})
    world.deliver(forward("203.0.113.61", "small-1", "bob@two.example"))
    proxy.rewrite = lambda said: re.sub(rb"\* OK \[UIDVALIDITY \d+\][^\r\n]*\r\n", b"", said)
    with pytest.raises(SourceError) as refused:
        world.run()
    assert f"127.0.0.1:{proxy.port} (user {world.imap.user}), folder INBOX" in str(refused.value)
    assert "no UIDVALIDITY" in str(refused.value)
    assert world.messages() == [] and world.imap.uids("INBOX") != []  # nothing taken, nothing moved
    # the refused connection was closed at once, not left to the garbage collector (`refused`
    # still holds the traceback, and with it anything the failed constructor left open)
    assert proxy.client_closed.wait(5)

    proxy.rewrite = None  # the server behaves again
    polled, _ = world.run()
    assert polled.fetch.stored == 1
    assert_all_done_once(world, ["bob@two.example"])


def big_forward(size: int) -> bytes:
    """A forward of the 5.7.511 NDR with a large attachment after it."""
    raw = forward("203.0.113.60", "big-1", "ann@one.example")
    filler = b"X-Padding: " + b"y" * 900 + b"\n"
    head, _, body = raw.partition(b"\n\n")
    return head + b"\n\n" + body.replace(
        b"--=_fwd_4814c9673ed3c6617e191ea7--",
        b"--=_fwd_4814c9673ed3c6617e191ea7\nContent-Type: text/plain\n\n"
        + filler * (size // len(filler)) + b"\n--=_fwd_4814c9673ed3c6617e191ea7--")


def assert_all_done_once(world: World, senders: list[str]) -> None:
    messages = world.messages()
    assert len(messages) == len(senders) and {m.state for m in messages} == {"processed"}
    assert len(world.tickets()) == len(senders)
    assert sorted(r.rcpt_tos[0] for r in world.smtp.wait_for(len(senders))) == sorted(senders)
    assert world.imap.uids("INBOX") == [] and len(world.imap.uids("Processed")) == len(senders)
    for uid in world.imap.uids("Processed"):
        assert world.imap.fetch_raw("Processed", uid) in [m.raw for m in messages]


def test_a_connection_cut_mid_fetch_of_a_5_mb_message_is_met_with_a_new_connection_in_the_same_poll(
        make_world, proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    world: World = make_world(mailbox={"port": proxy.port})
    world.deliver(big_forward(5 * 1024 * 1024))
    world.deliver(forward("203.0.113.61", "small-1", "bob@two.example"))

    proxy.arm("cut", after=1024 * 1024)
    with caplog.at_level(logging.WARNING, logger="mailbot.source.fetch"):
        polled, _ = world.run()
    assert proxy.faulted.is_set()
    cut = next(r.getMessage() for r in caplog.records if "failed" in r.getMessage())
    assert f"127.0.0.1:{proxy.port} (user {world.imap.user})" in cut and "fetch of UIDs" in cut
    assert (polled.fetch.stored, polled.fetch.failed, polled.process.processed) == (2, 0, 2)
    assert_all_done_once(world, ["ann@one.example", "bob@two.example"])
    assert max(m.size for m in world.messages()) > 5 * 1024 * 1024
    assert world.run()[0].fetch.stored == 0  # and nothing is left to fetch


def test_a_server_that_stalls_hits_the_timeout_and_a_new_connection_gets_the_message(
        make_world, proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    world: World = make_world(mailbox={"port": proxy.port, "timeout": 1})
    world.deliver(big_forward(2 * 1024 * 1024))

    proxy.arm("stall", after=512 * 1024)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mailbot.source.fetch"):
        world.run()
    assert time.monotonic() - started < 30  # the time-out fired; nothing waits forever
    assert any("timed out" in r.getMessage() and world.imap.user in r.getMessage() for r in caplog.records)
    assert_all_done_once(world, ["ann@one.example"])


def test_a_server_that_cannot_be_reached_again_fails_the_poll_naming_it_and_the_next_poll_recovers(
        make_world, proxy: FaultProxy) -> None:  # type: ignore[no-untyped-def]
    world: World = make_world(mailbox={"port": proxy.port})
    world.deliver(big_forward(3 * 1024 * 1024))
    world.deliver(forward("203.0.113.61", "small-1", "bob@two.example"))

    proxy.arm("cut", after=1024 * 1024)
    proxy.refusing_after_fault = True
    with pytest.raises(SourceError) as failed:
        world.run()
    assert f"127.0.0.1:{proxy.port} (user {world.imap.user})" in str(failed.value)
    assert "fetch of UIDs" in str(failed.value) and "reconnecting" in str(failed.value)
    assert world.messages() == []  # nothing half-stored

    proxy.refusing = False  # the server is back
    polled, _ = world.run()
    assert polled.fetch.failed == 0  # the server's fault was not counted against the mail
    assert_all_done_once(world, ["ann@one.example", "bob@two.example"])


def test_dovecot_restarted_mid_poll_leaves_the_mark_for_the_next_poll(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    real = world.desk.processor.extract
    restarted: list[bool] = []

    def extract_then_restart(raw: bytes) -> process.Extraction:
        if not restarted:
            restarted.append(True)
            world.imap.restart_server()  # the poll's IMAP connection is cut while it processes
        return real(raw)

    monkeypatch.setattr(world.desk.processor, "extract", extract_then_restart)
    world.deliver(forward("203.0.113.62", "r-1", "ann@one.example"))
    world.deliver(forward("203.0.113.63", "r-2", "bob@two.example"))

    with pytest.raises(SourceError) as failed:
        world.run()  # processing committed, marking on the server failed
    assert "marking" in str(failed.value)
    assert {m.state for m in world.messages()} == {"processed"} and len(world.imap.uids("INBOX")) == 2

    world.run()
    assert_all_done_once(world, ["ann@one.example", "bob@two.example"])


def test_a_message_the_server_will_not_hand_over_is_quarantined_after_three_polls_and_the_rest_flows(
        world: World) -> None:
    world.deliver(forward("203.0.113.70", "good-1", "ann@one.example"))
    world.deliver(forward("203.0.113.71", "unreadable-1", "eve@three.example"))
    world.deliver(forward("203.0.113.72", "good-2", "bob@two.example"))
    home = world.imap.server.root / "mail" / world.imap.user
    [path] = [p for sub in ("new", "cur") for p in (home / sub).iterdir() if b"unreadable-1" in p.read_bytes()]
    path.chmod(0)  # Dovecot (the mail user) cannot read it: FETCH gets "BYE Internal error" and the connection ends

    for poll in (1, 2, 3):
        polled, _ = world.run()  # raises nothing: the connection is renewed, the rest goes on
        assert polled.fetch.failed == 1, poll
        if poll < 3:
            assert polled.process.quarantined == 0 and len(world.imap.uids("INBOX")) == 1
    assert polled.process.quarantined == 1
    [row] = [m for m in world.messages() if m.state == "quarantined"]
    assert row.outcome is not None and row.outcome.startswith("quarantined: fetching failed 3 times: ")
    assert "Internal error" in row.outcome and row.truncated
    assert world.imap.uids("INBOX") == [] and len(world.imap.uids("Quarantine")) == 1  # kept, set aside
    assert len(world.imap.uids("Processed")) == 2
    assert sorted(r.rcpt_tos[0] for r in world.smtp.wait_for(2)) == ["ann@one.example", "bob@two.example"]
    assert len(world.tickets()) == 2

    polled, _ = world.run()  # and then it is left alone
    assert (polled.fetch.stored, polled.fetch.failed, polled.process.quarantined) == (0, 0, 0)
