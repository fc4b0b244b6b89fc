"""IMAP faults: a connection cut mid-FETCH, a server that stalls, Dovecot
restarted in the middle of a poll. Each poll that meets the fault fails
with an error naming the server and the user; the next poll recovers and
nothing is lost or doubled.

A small TCP proxy between mailbot and Dovecot makes the network faults.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from app import World, forward

from mailbot import process
from mailbot.source import SourceError


class FaultProxy:
    """127.0.0.1:port → target. The next connection meets `fault` after `after` bytes from the server:
    "cut" closes both sides, "stall" stops passing the server's bytes on. Later connections pass through."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.fault: str | None = None
        self.after = 0
        self.faulted = threading.Event()
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, fault: str, after: int) -> None:
        self.fault, self.after = fault, after
        self.faulted.clear()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            fault, self.fault = self.fault, None
            threading.Thread(target=self._pump, args=(client, upstream, None, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, fault, self.after), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, fault: str | None, after: int) -> None:
        passed = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if fault and passed + len(data) >= after:
                    dst.sendall(data[: max(after - passed, 0)])
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


def test_a_connection_cut_mid_fetch_of_a_5_mb_message_fails_the_poll_and_the_next_poll_gets_it(
        make_world, proxy: FaultProxy) -> None:  # type: ignore[no-untyped-def]
    world: World = make_world(mailbox={"port": proxy.port})
    world.deliver(big_forward(5 * 1024 * 1024))
    world.deliver(forward("203.0.113.61", "small-1", "bob@two.example"))

    proxy.arm("cut", after=1024 * 1024)
    with pytest.raises(SourceError) as failed:
        world.run()
    assert proxy.faulted.is_set()
    assert f"127.0.0.1:{proxy.port} (user {world.imap.user})" in str(failed.value)
    assert "fetch of UIDs" in str(failed.value)
    assert world.messages() == []  # nothing half-stored

    world.run()
    assert_all_done_once(world, ["ann@one.example", "bob@two.example"])
    assert max(m.size for m in world.messages()) > 5 * 1024 * 1024


def test_a_server_that_stalls_hits_the_timeout_and_the_next_poll_recovers(
        make_world, proxy: FaultProxy) -> None:  # type: ignore[no-untyped-def]
    world: World = make_world(mailbox={"port": proxy.port, "timeout": 1})
    world.deliver(big_forward(2 * 1024 * 1024))

    proxy.arm("stall", after=512 * 1024)
    started = time.monotonic()
    with pytest.raises(SourceError) as failed:
        world.run()
    assert time.monotonic() - started < 30  # the time-out fired; nothing waits forever
    assert "timed out" in str(failed.value) and world.imap.user in str(failed.value)

    world.run()
    assert_all_done_once(world, ["ann@one.example"])


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
