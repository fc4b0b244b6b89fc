"""SLA sweep and digest render over 100,000 tickets, against a bare count.

    .venv/bin/python bench/sla.py [N] [--db sqlite|postgresql|both]

Fills a fresh database with N tickets in mixed states (about a third open,
with due times spread over the 48-hour window and beyond), then times in
the same run: `SELECT count(*) FROM ticket` (the baseline), one SLA sweep
(no staff list, so no mail is rendered: the query and the notice inserts
are what is measured), and one digest render. Prints the query plan of the
sweep to show it walks the (state, due_at) index, and ends with one JSON
line of the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text

from mailbot.config import parse
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.render import Renderer
from mailbot.staffing import digest, sla
from mailbot.store.engine import create_schema, make_engine
from mailbot.store.tables import Ticket

STATES = ["open"] * 34 + ["answered"] * 30 + ["closed"] * 20 + ["redirected"] * 10 + ["needs_info"] * 6


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{d}/bench.db"
        return
    import psycopg

    name = f"mailbot_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def fill(engine: Any, n: int, now: datetime) -> None:
    rnd = random.Random(7)
    rows = []
    for i in range(n):
        state = rnd.choice(STATES)
        opened = now - timedelta(minutes=rnd.randint(0, 60 * 24 * 30))
        rows.append({
            "state": state, "sender": f"sender{i % 5000}@example.com", "ip": f"10.{i % 250}.{i // 250 % 250}.{i % 7}",
            "reply_code": "550", "status": rnd.choice(["5.7.511", "5.7.606", "5.1.1"]), "text": "550 5.7.511 x",
            "rule": "banned_sender", "subject": f"Fwd: undeliverable {i}", "opened_at": opened,
            "due_at": opened + timedelta(hours=48) if state == "open" else None, "clock": 1,
            "updated_at": opened, "verified": True, "sla_stage": 0,
        })
    with engine.begin() as conn:
        for i in range(0, n, 5000):
            conn.execute(insert(Ticket), rows[i:i + 5000])


def best_of(fn: Callable[[], Any], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def plan(engine: Any, kind: str, now: datetime) -> str:
    horizon = now + timedelta(hours=8)
    q = "SELECT id FROM ticket WHERE state = 'open' AND sla_stage = 0 AND due_at IS NOT NULL AND due_at <= :h"
    prefix = "EXPLAIN QUERY PLAN " if kind == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.execute(text(prefix + q), {"h": horizon}).all()
    return " | ".join(str(r[-1]) for r in rows)


def run(kind: str, n: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    with database(kind) as url:
        engine = make_engine(url)
        create_schema(engine)
        t = time.perf_counter()
        fill(engine, n, now)
        fill_s = time.perf_counter() - t
        if kind == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        config = parse({"mailbox": {"source": "maildir", "maildir_path": "x"},
                        "outgoing": {"transport": "maildir", "maildir_path": "y"}, "database": {"url": url}},
                       environ={})
        renderer = Renderer()
        mailer = Mailer(renderer, config.outgoing, config.desk)

        def count() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT count(*) FROM ticket")).scalar_one()

        count_s = best_of(count)
        t = time.perf_counter()
        first = sla.sweep(engine, mailer, config.sla, now)  # records every crossing notice
        first_s = time.perf_counter() - t
        steady_s = best_of(lambda: sla.sweep(engine, mailer, config.sla, now))  # nothing new: the usual case
        digest_s = best_of(lambda: digest.render(engine, renderer, config.desk, config.sla, now), runs=1)
        query_plan = plan(engine, kind, now)
        engine.dispose()
    crossed = len(first.escalated) + len(first.breached)
    return {"db": kind, "tickets": n, "fill_s": round(fill_s, 2), "count_s": round(count_s, 5),
            "sweep_first_s": round(first_s, 4), "sweep_first_notices": crossed,
            "sweep_steady_s": round(steady_s, 5), "digest_render_s": round(digest_s, 3),
            "sweep_steady_vs_count": round(steady_s / count_s, 2), "sweep_first_vs_count": round(first_s / count_s, 2),
            "digest_vs_count": round(digest_s / count_s, 1), "sweep_plan": query_plan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=100_000)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = []
    for kind in kinds:
        r = run(kind, args.n)
        results.append(r)
        print(f"{kind}: {r['tickets']} tickets; count(*) {r['count_s'] * 1000:.1f} ms; "
              f"first sweep {r['sweep_first_s'] * 1000:.0f} ms ({r['sweep_first_notices']} notices, "
              f"{r['sweep_first_vs_count']}x count); steady sweep {r['sweep_steady_s'] * 1000:.1f} ms "
              f"({r['sweep_steady_vs_count']}x count); digest render {r['digest_render_s']:.2f} s "
              f"({r['digest_vs_count']}x count)")
        print(f"  sweep query plan: {r['sweep_plan']}")
    print(json.dumps({"benchmark": "sla", "results": results}))


if __name__ == "__main__":
    main()
