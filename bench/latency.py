"""Append-to-reply latency with the daemon waiting in IMAP IDLE, with and without the recheck.

    .venv/bin/python bench/latency.py [--rate 20] [--seconds 60] [--db sqlite|postgresql]
                                      [--idle-recheck 0.1] [--rounds 1] [--also DIR]

One `mailbot run` (a separate process, IDLE on, the interval poll set to an
hour so that only IDLE can explain a fast reply) watches a private Dovecot
mailbox; forwarded NDRs from the corpus are appended at a steady rate; the
time from each APPEND to its reply arriving at a local SMTP server (matched by
In-Reply-To) gives p50, p99 and max. Each run has a fresh Dovecot user and a
fresh database.

Runs, in the same bench run and on the same messages: the daemon with
`mailbox.idle_recheck_seconds = 0` (the baseline: it hears of new mail when
Dovecot tells it, 500 ms after the APPEND) and with `--idle-recheck S`
(`--idle-recheck 0` runs the baseline only); `--also DIR` adds a daemon run
from another source tree (a `git archive` of an earlier commit), as it was.
With `--rounds R` each round runs each once, the order rotating; the figures
are the medians over the rounds. The round trip of a plain APPEND is measured
too. Target (issue #16): p99 under 0.5 s. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import _servers
from imapclient import IMAPClient
from servers import DovecotServer, SMTPServer

from mailbot.desk import replyguard
from mailbot.source import inbound

TARGET_P99_S = 0.5


class TimedSMTP(SMTPServer):
    """The test suite's aiosmtpd server, noting when each reply arrived, by the forward it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    def _record(self, record: Any) -> None:
        headers = BytesHeaderParser().parsebytes(record.data)
        parent = (headers.get("In-Reply-To") or "").strip()
        self.arrived.setdefault(parent, time.monotonic())
        super()._record(record)


@dataclass(frozen=True)
class Contender:
    label: str
    recheck: float
    tree: Path | None = None
    """Run mailbot from this source tree (None: this one)."""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def answerable(n: int) -> tuple[list[bytes], list[str]]:
    copier = _servers.Copier(_servers.load_forwards(), "lat")
    # only forwards a person sent get a reply: the corpus's raw NDRs (from MAILER-DAEMON) never do
    own = frozenset({"delist@example.org"})
    candidates = (copier.copy(i) for i in range(10 * n))
    messages = [m for m in candidates if replyguard.verdict(inbound.parse(m), own).allowed][:n]
    return messages, [BytesHeaderParser().parsebytes(m).get("Message-ID", "").strip() for m in messages]


def run(server: DovecotServer, who: Contender, db: str, rate: float, messages: list[bytes],
        ids: list[str]) -> dict[str, Any]:
    """One daemon on a fresh user and database; the messages appended at `rate`; the latencies."""
    n = len(messages)
    with _servers.postgres_database() if db == "postgresql" else nullcontext(None) as pg_url, \
            tempfile.TemporaryDirectory() as tmp:
        if db == "postgresql" and not pg_url:
            raise SystemExit("PostgreSQL not reachable")
        box, _ = _servers.fill_mailbox(server, [], prefix="lat")
        smtp = TimedSMTP()
        smtp.start()
        data = _servers.config_data(box, pg_url or f"sqlite:///{tmp}/mailbot.db", smtp_port=smtp.port)
        data["schedule"] = {"poll_seconds": 3600, "flush_seconds": 5}
        data["mailbox"]["idle"] = True
        if who.tree is None:  # an earlier tree may not know the key
            data["mailbox"]["idle_recheck_seconds"] = who.recheck
        data["log"] = {"level": "WARNING"}
        password = data["mailbox"].pop("password")
        config = Path(tmp) / "mailbot.toml"
        _servers.write_config(config, data)
        env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": password}
        if who.tree is not None:
            env["PYTHONPATH"] = str(who.tree)
        daemon = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(config), "run"], env=env,
                                  cwd=who.tree or None, stdout=subprocess.DEVNULL,
                                  stderr=open(Path(tmp) / "daemon.log", "w"))  # noqa: SIM115
        appended: dict[str, float] = {}
        append_rtt: list[float] = []
        try:
            client = IMAPClient(box.host, port=box.port, ssl=False, timeout=30)
            client.login(box.user, box.password)
            time.sleep(3)  # the daemon starts, runs its first poll and enters IDLE
            start = time.monotonic()
            for i, raw in enumerate(messages):
                pause = start + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                t = time.monotonic()
                client.append("INBOX", raw)
                appended[ids[i]] = t
                append_rtt.append(time.monotonic() - t)
            deadline = time.monotonic() + 120
            while len(smtp.arrived) < n and time.monotonic() < deadline:
                time.sleep(0.1)
            client.logout()
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            smtp.stop()
        complaints = (Path(tmp) / "daemon.log").read_text(errors="replace").splitlines()
    latencies = [smtp.arrived[mid] - t for mid, t in appended.items() if mid in smtp.arrived]
    for line in complaints[:3]:  # a reply that waited for a retry shows here
        print(f"  daemon ({who.label}): {line[:200]}")
    if not latencies:
        return {"replies": 0, "missing": n, "daemon_log_lines": len(complaints)}
    return {"replies": len(latencies), "missing": n - len(latencies), "daemon_log_lines": len(complaints),
            "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 99), "max_s": max(latencies),
            "append_rtt_s": statistics.median(append_rtt)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20.0, help="messages appended per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to append, per run")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--idle-recheck", type=float, default=0.1, metavar="S",
                    help="mailbox.idle_recheck_seconds of the second daemon (0: the baseline only)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--also", type=Path, metavar="DIR", help="also run mailbot from this source tree")
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    messages, ids = answerable(n)
    contenders = [Contender("recheck off", 0.0)]
    if args.idle_recheck:
        contenders.append(Contender(f"recheck {args.idle_recheck:g} s", args.idle_recheck))
    if args.also:
        contenders.insert(0, Contender(f"{args.also.name} (as it was)", 0.0, args.also.resolve()))
    results: dict[str, list[dict[str, Any]]] = {c.label: [] for c in contenders}
    with _servers.dovecot() as server:
        for r in range(args.rounds):
            k = r % len(contenders)
            for who in contenders[k:] + contenders[:k]:
                got = run(server, who, args.db, args.rate, messages, ids)
                results[who.label].append(got)
                print(f"round {r + 1}, {who.label}: " + (
                    f"p50 {got['p50_s']:.3f} s, p99 {got['p99_s']:.3f} s, max {got['max_s']:.3f} s, "
                    f"{got['replies']} replies, {got['missing']} missing" if got["replies"] else "no reply arrived"),
                    flush=True)

    print(f"\n{n} forwards a run, appended at {args.rate:g}/s for {args.seconds:g} s ({args.db}); "
          f"medians over {args.rounds} round(s); target p99 < {TARGET_P99_S} s")
    figures: dict[str, Any] = {"bench": "latency", "db": args.db, "rate_per_s": args.rate, "seconds": args.seconds,
                               "messages": n, "rounds": args.rounds, "target_p99_s": TARGET_P99_S, "runs": {}}
    for c in contenders:
        got = [g for g in results[c.label] if g["replies"]]
        if not got:
            print(f"  {c.label:>24}: no reply arrived")
            figures["runs"][c.label] = {"error": "no reply arrived"}
            continue
        row = {key: round(statistics.median(g[key] for g in got), 4)
               for key in ("p50_s", "p99_s", "max_s", "append_rtt_s")}
        missing = sum(g["missing"] for g in results[c.label])
        row.update(recheck_s=c.recheck, missing=missing, target_met=row["p99_s"] < TARGET_P99_S and missing == 0)
        figures["runs"][c.label] = row
        print(f"  {c.label:>24}: p50 {row['p50_s']:.3f} s, p99 {row['p99_s']:.3f} s, max {row['max_s']:.3f} s, "
              f"{missing} missing; target {'met' if row['target_met'] else 'NOT met'} "
              f"(a plain APPEND takes {row['append_rtt_s']:.4f} s)")
    base = figures["runs"].get("recheck off", {})
    for c in (c for c in contenders if c.tree is None and c.recheck):
        row = figures["runs"][c.label]
        if "p99_s" in row and "p99_s" in base:
            row["p99_over_off"] = round(row["p99_s"] / base["p99_s"], 2)
            print(f"  {c.label}: p99 {row['p99_over_off']:.2f}x that with the recheck off")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
