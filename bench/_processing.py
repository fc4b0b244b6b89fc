"""bench/listing.py's second half: processing a message with a listing lookup and without one.

The same N forwards (5.7.511, each for its own IP from the benchmarking range, about half of
them listed) are processed by `Desk.processor.run()` in this process, once per mode, each on a
fresh database holding the same listings, messages already stored (fetch is not timed):

    none            no [listing] source: no lookup (the baseline)
    table_cached    the table source, every IP in the Lister's cache already (a second forward
                    for an IP within listing.cache_seconds)
    table_uncached  the table source, cache_seconds = 0: one table lookup per message
    http_uncached   the http source against tests/listing_servers.py's list service, run in a
                    process of its own: one HTTP request on loopback per message
    dnsbl_uncached  the dnsbl source against a private NSD (when nsd is installed)

Each mode runs `rounds` times, modes interleaved; the figure is the best round's time per
message. Every ticket is checked: its listing must be what the list says (never "lookup failed").
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailbot.app import Desk
from mailbot.config import parse
from mailbot.source.fetch import fetch
from mailbot.store.tables import Ticket

MODES = ("none", "table_cached", "table_uncached", "http_uncached", "dnsbl_uncached")


def _serve(listed: list[str], port_out: Any) -> None:
    """The list service in a child process (its own GIL, as a real service would have)."""
    from http.server import ThreadingHTTPServer

    from listing_servers import ListService, _handler  # tests/listing_servers.py

    service = ListService(listings={ip: {"category": "bench"} for ip in listed})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service))
    port_out.put(server.server_address[1])
    server.serve_forever()


@contextmanager
def list_service(listed: set[str]) -> Iterator[str]:
    ctx = multiprocessing.get_context("spawn")
    port_out = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(sorted(listed), port_out), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{port_out.get(timeout=30)}/api"
    finally:
        proc.terminate()
        proc.join(10)


def messages(ips: list[str]) -> list[bytes]:
    from app import forward  # tests/app.py: a 5.7.511 forward-as-attachment for an IP

    return [forward(ip, tag=f"bench-{i}", sender=f"ops@s{i}.bench.example") for i, ip in enumerate(ips)]


def write_maildir(root: Path, raws: list[bytes]) -> None:
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(raws):
        (root / "new" / f"{i:06d}.bench").write_bytes(raw)


def one_run(mode: str, raws: list[bytes], ips: list[str], db_url: str, fill: Callable[[str], Any],
            listing: dict[str, Any], listed: set[str]) -> float:
    """Seconds per message for `mode`, after checking every ticket's listing."""
    with tempfile.TemporaryDirectory() as d:
        write_maildir(Path(d) / "inbox", raws)
        fill(db_url).dispose()  # the schema and the same listings for every mode
        config = parse({
            "mailbox": {"source": "maildir", "maildir_path": str(Path(d) / "inbox"), "process_batch": 50},
            "outgoing": {"transport": "maildir", "maildir_path": str(Path(d) / "outbox"),
                         "from_address": "delist@example.org"},
            "database": {"url": db_url}, "policy": {"allow_ranges": ["198.18.0.0/15"]},
            "replies": {"breaker_per_hour": 10_000_000}, "listing": listing,
        }, base_dir=d, environ={})
        desk = Desk(config)
        try:
            fetch(desk.engine, desk.open_source(), 500)
            lister = desk.listing()
            if mode == "table_cached" and lister is not None:
                for ip in ips:
                    lister.lookup(ip)
            t0 = time.perf_counter()
            done = desk.processor.run()
            took = time.perf_counter() - t0
            assert done.processed == len(raws), done
            with desk.engine.connect() as conn:
                states = dict(conn.execute(select(Ticket.listing, func.count()).group_by(Ticket.listing)).all())
            want = {None: len(ips)} if mode == "none" else \
                {k: v for k, v in {"listed": sum(ip in listed for ip in ips),
                                   "not_listed": sum(ip not in listed for ip in ips)}.items() if v}
            assert states == want, (mode, states, want)
        finally:
            desk.close()
    return took / len(raws)


def figures(n: int, asked: list[str], listed: set[str], database: Callable[[], Any],
            fill: Callable[[str], Any], dnsbl: Callable[[], Any] | None, rounds: int = 2) -> dict[str, Any]:
    ips = asked[:n]
    raws = messages(ips)
    out: dict[str, Any] = {"process_messages": len(raws)}
    best: dict[str, float] = {}
    with list_service({ip for ip in ips if ip in listed}) as url, (dnsbl() if dnsbl else _none()) as nsd:
        listing = {"none": {}, "table_cached": {"source": "table", "cache_seconds": 3600},
                   "table_uncached": {"source": "table", "cache_seconds": 0},
                   "http_uncached": {"source": "http", "http_url": url, "cache_seconds": 0},
                   "dnsbl_uncached": {"source": "dnsbl", "dnsbl_zone": "bl.bench", "dnsbl_nameserver": "127.0.0.1",
                                      "dnsbl_port": nsd.port, "cache_seconds": 0} if nsd else None}
        for r in range(rounds):
            for mode in (MODES if r % 2 == 0 else tuple(reversed(MODES))):
                if listing[mode] is None:
                    continue
                with database() as db_url:
                    per = one_run(mode, raws, ips, db_url, fill, listing[mode] or {}, listed)
                best[mode] = min(best.get(mode, per), per)
    base = best["none"]
    for mode, per in best.items():
        out[f"process_{mode}_ms"] = per * 1e3
        if mode != "none":
            out[f"process_{mode}_lookup_ms"] = (per - base) * 1e3
            out[f"process_{mode}_ratio"] = per / base
    return out


@contextmanager
def _none() -> Iterator[None]:
    yield None


def report(f: dict[str, Any]) -> None:
    base = f["process_none_ms"]
    print(f"processing {f['process_messages']} forwards, no listing source: {base:.2f} ms per message")
    for mode in MODES[1:]:
        if f"process_{mode}_ms" in f:
            print(f"  {mode:<15} {f[f'process_{mode}_ms']:.2f} ms per message: the lookup adds "
                  f"{f[f'process_{mode}_lookup_ms']:+.2f} ms ({f[f'process_{mode}_ratio']:.2f} x)")
