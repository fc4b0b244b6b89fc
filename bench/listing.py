"""The cost of a listing lookup per message, against parsing the message (issue #17).

    .venv/bin/python bench/listing.py [--entries 10000] [--lookups 2000] [--db sqlite|postgresql] [--process 300]

Measured in the same run, each as the median time per operation over `--lookups` operations
(IPs drawn at random, about half of them listed), in this process:

- baseline: the standard library parsing a 15 KB forwarded NDR (`email.message_from_bytes`
  with the default policy, then walking its parts): the least any processing of a message does;
- table, cached: `Lister.lookup` answered from the cache (`cache_seconds` = 60, warmed first);
- table, uncached: `Lister.lookup` asking the table every time (`cache_seconds` = 0) on a
  database holding `--entries` listings (a tenth of them networks) and their history;
- dnsbl, uncached: `Lister.lookup` against a private NSD on 127.0.0.1 serving a zone of the
  same listings (an A and a TXT query for a listed IP, one for the rest).

Then, in the same run, what a lookup costs a message where it happens, in processing
(`_processing.py`, `--process N` forwards, 0 to skip): `Desk.processor.run()` over the same N
stored forwards without a listing source, and with the table (cached, uncached), the http source
against the list service in a process of its own, and the dnsbl source against NSD, uncached:
the time per message of each and what the lookup adds to it.

Prints each cost and its ratio to the baseline; the last line is one JSON object of the figures.
Needs nsd (scripts/install-test-deps) for the dnsbl row, PostgreSQL for --db postgresql
(`MAILBOT_BENCH_POSTGRES_URL`, a `mailbot_bench_<hex>` database made and dropped).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import ipaddress
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    sys.path.insert(0, str(_p))

from sqlalchemy import insert  # noqa: E402

from mailbot.app import open_listing  # noqa: E402
from mailbot.config import parse  # noqa: E402
from mailbot.listing import Listing  # noqa: E402
from mailbot.listing.table import bounds  # noqa: E402
from mailbot.store.engine import create_schema, make_engine  # noqa: E402
from mailbot.store.listing_tables import ListingEntry, ListingHistory  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_V4 = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: reserved for benchmarking


def message_15kb() -> bytes:
    """A forward-as-attachment of a 550 5.7.511 NDR, its text padded to 15 KB."""
    raw = (ROOT / "mailbot" / "samples" / "01-banned-sender-attached.eml").read_bytes()
    filler = b"".join(b"Line %d of the original message, quoted by the forwarder.\r\n" % i for i in range(400))
    head, sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    padded = head + sep + filler + body
    return padded[:15 * 1024] if len(padded) > 15 * 1024 else padded + b"\n" * (15 * 1024 - len(padded))


def per_op(fn: Callable[[Any], object], args: list[Any]) -> float:
    """Median seconds per call over `args`, in 20 batches (a batch's time divided by its size)."""
    batches = [args[i::20] for i in range(20)]
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        for a in batch:
            fn(a)
        times.append((time.perf_counter() - t0) / max(1, len(batch)))
    return statistics.median(times)


def baseline(raw: bytes) -> None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        part.get_content_type()


def listed_set(entries: int, rng: random.Random) -> tuple[list[ipaddress.IPv4Network], list[str]]:
    """`entries` listings in the benchmarking range: single IPs from 198.18.0.0/16, every tenth
    a /28 from 198.19.0.0/16; and as many IPs to ask again, half listed (a listed IP, or one
    inside a listed /28) and half not (other addresses of 198.18.0.0/16)."""
    singles_range, nets_range = list(BENCH_V4.subnets(new_prefix=16))
    hosts = list(singles_range.hosts())
    rng.shuffle(hosts)
    n_nets = entries // 10
    blocks = rng.sample(range(nets_range.num_addresses // 16), n_nets)
    nets = [ipaddress.ip_network((int(nets_range.network_address) + 16 * b, 28)) for b in blocks]
    nets += [ipaddress.ip_network(ip) for ip in hosts[:entries - n_nets]]
    asked = [str(n.network_address + rng.randrange(n.num_addresses)) for n in nets]
    asked += [str(ip) for ip in hosts[len(nets):2 * len(nets)]]
    rng.shuffle(asked)
    return nets, asked


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{d}/bench.db"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get("MAILBOT_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    name = f"mailbot_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(admin_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, nets: list[ipaddress.IPv4Network]) -> Any:
    engine = make_engine(url)
    create_schema(engine)
    now = datetime.now(UTC)
    rows, history = [], []
    for n in nets:
        b = bounds(n)
        rows.append({"network": str(n), "version": 4, "first": b.first, "last": b.last, "prefix": n.prefixlen,
                     "since": now, "category": "spam", "reason": "bench", "origin": "bench", "added_by": "bench"})
        history.append({"network": str(n), "version": 4, "first": b.first, "last": b.last, "action": "listed",
                        "at": now, "actor": "bench", "why": "bench"})
    with engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(insert(ListingEntry), rows[i:i + 1000])
            conn.execute(insert(ListingHistory), history[i:i + 1000])
    return engine


def config(**listing: Any) -> Any:
    return parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
                  "outgoing": {"transport": "maildir", "maildir_path": "o"}, "listing": listing}, environ={})


def zone_records(nets: list[ipaddress.IPv4Network]) -> list[str]:
    out = []
    for n in nets:
        for ip in ([n.network_address] if n.prefixlen == 32 else list(n)):
            name = ".".join(reversed(str(ip).split(".")))
            out += [f"{name} IN A 127.0.0.2", f'{name} IN TXT "bench listing {n}"']
    return out


def check(lookup: Callable[[str], object], asked: list[str], listed: set[str]) -> None:
    """The figures are for correct answers: every IP asked is answered, listed exactly when it is."""
    for ip in asked[:200]:
        got = lookup(ip)
        assert isinstance(got, Listing), got
        assert got.listed == (ip in listed), (ip, got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=2_000)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--process", type=int, default=300, help="forwards processed per mode (0: skip)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each processing mode (the best counts)")
    ns = ap.parse_args()
    rng = random.Random(17)
    nets, asked_all = listed_set(ns.entries, rng)
    asked = asked_all[:ns.lookups]
    listed = {str(ip) for n in nets for ip in (n if n.prefixlen < 32 else [n.network_address])}
    figures: dict[str, Any] = {"entries": len(nets), "lookups": len(asked), "db": ns.db}

    raw = message_15kb()
    figures["baseline_parse_15kb_us"] = per_op(lambda _: baseline(raw), asked) * 1e6
    print(f"baseline: stdlib parse of a {len(raw) // 1024} KB message: {figures['baseline_parse_15kb_us']:.1f} us")

    with database(ns.db) as url:
        engine = fill(url, nets)
        cached = open_listing(config(source="table", cache_seconds=60), engine)
        uncached = open_listing(config(source="table", cache_seconds=0), engine)
        assert cached and uncached
        check(uncached.lookup, asked, listed)
        for ip in asked:
            cached.lookup(ip)
        figures["table_cached_us"] = per_op(cached.lookup, asked) * 1e6
        figures["table_uncached_us"] = per_op(uncached.lookup, asked) * 1e6
        engine.dispose()

    nsd = shutil.which("nsd") or ("/usr/sbin/nsd" if os.access("/usr/sbin/nsd", os.X_OK) else None)
    if nsd:
        from listing_servers import NsdServer

        with tempfile.TemporaryDirectory() as d:
            server = NsdServer(nsd, Path(d), "bl.bench", zone_records(nets))
            server.start()
            try:
                dnsbl = open_listing(config(source="dnsbl", dnsbl_zone="bl.bench", dnsbl_nameserver="127.0.0.1",
                                           dnsbl_port=server.port, cache_seconds=0), None)
                assert dnsbl
                check(dnsbl.lookup, asked, listed)
                figures["dnsbl_uncached_us"] = per_op(dnsbl.lookup, asked) * 1e6
            finally:
                server.stop()
    else:
        print("dnsbl: skipped (nsd is not installed)")
        figures["dnsbl_uncached_us"] = None

    if ns.process > 0:
        import _processing

        @contextmanager
        def nsd_server() -> Iterator[Any]:
            from listing_servers import NsdServer

            with tempfile.TemporaryDirectory() as d:
                server = NsdServer(str(nsd), Path(d), "bl.bench", zone_records(nets))
                server.start()
                try:
                    yield server
                finally:
                    server.stop()

        processed = _processing.figures(ns.process, asked, listed, lambda: database(ns.db), lambda u: fill(u, nets),
                                        nsd_server if nsd else None, ns.rounds)
        _processing.report(processed)
        figures.update(processed)

    base = figures["baseline_parse_15kb_us"]
    for key, label in (("table_cached_us", "table, cached"), ("table_uncached_us", f"table, uncached ({ns.db})"),
                       ("dnsbl_uncached_us", "dnsbl, uncached (NSD on loopback)")):
        if figures[key] is not None:
            figures[key.replace("_us", "_ratio")] = figures[key] / base
            print(f"{label}: {figures[key]:.1f} us per lookup = {figures[key] / base:.2f} x the baseline")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
