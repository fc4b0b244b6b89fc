"""Append-to-reply latency with the daemon waiting in IMAP IDLE.

    .venv/bin/python bench/latency.py [--rate 20] [--seconds 60] [--db sqlite|postgresql]

One `mailbot run` (a separate process, IDLE on, the interval poll set to an
hour so that only push can explain a fast reply) watches a private Dovecot
mailbox; forwarded NDRs from the corpus are appended at a steady rate; the
time from each APPEND to its reply arriving at a local SMTP server (matched by
In-Reply-To) gives p50, p99 and max. Target: p99 under 2 s. As a baseline in
the same run, the round trip of a plain APPEND is measured too. Ends with one
JSON line of the figures.
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
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import _servers
from imapclient import IMAPClient
from servers import SMTPServer

from mailbot.desk import replyguard
from mailbot.source import inbound


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


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20.0, help="messages appended per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to append")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    copier = _servers.Copier(_servers.load_forwards(), "lat")
    # only forwards a person sent get a reply: the corpus's raw NDRs (from MAILER-DAEMON) never do
    own = frozenset({"delist@example.org"})
    answerable = (copier.copy(i) for i in range(10 * n))
    messages = [m for m in answerable if replyguard.verdict(inbound.parse(m), own).allowed][:n]
    ids = [BytesHeaderParser().parsebytes(m).get("Message-ID", "").strip() for m in messages]

    with _servers.dovecot() as server, _servers.postgres_database() as pg_url, \
            tempfile.TemporaryDirectory() as tmp:
        box, _ = _servers.fill_mailbox(server, [], prefix="lat")
        smtp = TimedSMTP()
        smtp.start()
        db_url = pg_url if args.db == "postgresql" and pg_url else f"sqlite:///{tmp}/mailbot.db"
        data = _servers.config_data(box, db_url, smtp_port=smtp.port)
        data["schedule"] = {"poll_seconds": 3600, "flush_seconds": 5}
        data["mailbox"]["idle"] = True
        data["log"] = {"level": "WARNING"}
        password = data["mailbox"].pop("password")
        config = Path(tmp) / "mailbot.toml"
        _servers.write_config(config, data)
        daemon = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(config), "run"],
                                  env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": password},
                                  stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "daemon.log", "w"))  # noqa: SIM115
        try:
            client = IMAPClient(box.host, port=box.port, ssl=False, timeout=30)
            client.login(box.user, box.password)
            time.sleep(3)  # the daemon starts, runs its first poll and enters IDLE
            appended: dict[str, float] = {}
            append_rtt: list[float] = []
            start = time.monotonic()
            for i, raw in enumerate(messages):
                due = start + i / args.rate
                pause = due - time.monotonic()
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

    latencies = [smtp.arrived[mid] - t for mid, t in appended.items() if mid in smtp.arrived]
    missing = n - len(latencies)
    if not latencies:
        print(json.dumps({"bench": "latency", "error": "no reply arrived"}))
        return
    figures = {
        "bench": "latency", "db": args.db, "rate_per_s": args.rate, "seconds": args.seconds, "messages": n,
        "replies": len(latencies), "missing": missing,
        "p50_s": round(statistics.median(latencies), 3), "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(max(latencies), 3), "append_rtt_p50_s": round(statistics.median(append_rtt), 4),
        "p99_over_append_rtt": round(percentile(latencies, 99) / statistics.median(append_rtt), 1),
        "target_p99_s": 2.0, "target_met": percentile(latencies, 99) < 2.0 and missing == 0,
    }
    print(f"{n} forwards appended at {args.rate}/s for {args.seconds:.0f} s ({args.db}); "
          f"{len(latencies)} replies arrived, {missing} missing")
    print(f"append -> reply: p50 {figures['p50_s']} s, p99 {figures['p99_s']} s, max {figures['max_s']} s "
          f"(a plain APPEND takes {figures['append_rtt_p50_s']} s); target p99 < 2 s: "
          f"{'met' if figures['target_met'] else 'NOT met'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
