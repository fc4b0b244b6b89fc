"""Backlog: mailbot's peak memory over a 20,000-message backlog against 2,000 (issue #6).

For each size, a fresh user of a private Dovecot gets that many forwarded NDRs
(corpus copies as in bench/ingest.py, written straight into its Maildir and indexed
by Dovecot before anything runs), then a SUBPROCESS builds a Desk (SQLite file,
outgoing mail to a local Maildir so SMTP costs nothing) and calls `run_once()` until
the INBOX is empty and nothing is left queued. The parent reads that process's peak
RSS from os.wait4 (ru_maxrss); the child reports VmHWM and its RSS just after start-up.

Prints both peaks and the ratio large/small (target < 1.5: memory bounded by the
batch, not the backlog). The last line is one JSON object of the figures.

Usage: .venv/bin/python bench/backlog.py [--small 2000] [--large 20000] [--source imap|maildir]
       [--timeout SECONDS]
While a run goes, its RSS and progress (read from the SQLite file) are sampled from
outside every 5 s. The large run is stopped after --timeout seconds (default 360): the
peak is then the peak over the stages it reached, and the output says so.
`--source maildir` points mailbot at the same Maildir directly instead of IMAP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET = 1.5


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(config_path: str) -> None:
    """The measured process: only mailbot and what it needs are imported here."""
    from imapclient import IMAPClient
    from sqlalchemy import func, select

    from mailbot.config import parse
    from mailbot.desk import Desk
    from mailbot.models import OutboxMail, StoredMessage

    spec = json.loads(Path(config_path).read_text())
    config = parse(spec["config"], base_dir=str(Path(config_path).parent), environ={})
    desk = Desk(config)
    rss_start = _status_kb("VmRSS")
    m = config.mailbox

    def inbox_left() -> int:
        if m.source == "maildir":
            p = config.path(m.maildir_path)
            return sum(len(os.listdir(p / sub)) for sub in ("new", "cur"))
        c = IMAPClient(m.host, port=m.port, ssl=False, timeout=60)
        c.login(m.user, m.secret())
        try:
            return int(c.folder_status(m.folder, [b"MESSAGES"])[b"MESSAGES"])
        finally:
            c.logout()

    def queued() -> int:
        with desk.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(OutboxMail)
                                    .where(OutboxMail.state == "queued")).scalar() or 0)

    t0 = time.perf_counter()
    passes = 0
    while passes < 50:
        desk.run_once()
        passes += 1
        if inbox_left() == 0 and queued() == 0:
            break
    elapsed = time.perf_counter() - t0
    with desk.engine.connect() as conn:
        processed = int(conn.execute(select(func.count()).select_from(StoredMessage)
                                     .where(StoredMessage.state != "stored")).scalar() or 0)
        sent = int(conn.execute(select(func.count()).select_from(OutboxMail)
                                .where(OutboxMail.state == "sent")).scalar() or 0)
    print(json.dumps({"elapsed_s": round(elapsed, 2), "passes": passes, "done": processed, "sent": sent,
                      "left": inbox_left(), "rss_start_kb": rss_start, "vmhwm_kb": _status_kb("VmHWM")}))


def _sample(pid: int, db: Path, start: float, into: list[dict[str, Any]], every: float = 5.0) -> None:
    """From outside the child: its RSS and its progress (read from the SQLite file) every few seconds."""
    status = Path(f"/proc/{pid}/status")
    queries = {"stored": "SELECT count(*) FROM message", "done": "SELECT count(*) FROM message WHERE state <> 'stored'",
               "marked": "SELECT count(*) FROM message WHERE server_done", "sent": "SELECT count(*) FROM outbox "
               "WHERE state = 'sent'"}
    next_print = start + 30
    while True:
        try:
            text = status.read_text()
        except (FileNotFoundError, ProcessLookupError):
            return
        if "\nState:\tZ" in text:  # exited, waiting to be reaped
            return
        rss = next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmRSS:")), 0)
        row: dict[str, Any] = {"t": round(time.monotonic() - start, 1), "rss_kb": rss}
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
                for k, q in queries.items():
                    row[k] = c.execute(q).fetchone()[0]
        except sqlite3.Error:
            row.update(dict.fromkeys(queries, None))
        into.append(row)
        if time.monotonic() >= next_print:
            next_print += 30
            print(f"        t={row['t']:6.0f} s  RSS {rss / 1024:6.1f} MiB  stored {row['stored']}  processed "
                  f"{row['done']}  marked on server {row['marked']}  replies sent {row['sent']}", flush=True)
        time.sleep(every)


def run_size(server: Any, copier: Any, n: int, source: str, tmp: Path, timeout: float) -> dict[str, Any]:
    import _servers as S

    t0 = time.perf_counter()
    box, _ = S.fill_mailbox(server, copier.copies(n), prefix=f"bl{n}-")
    load_s = time.perf_counter() - t0
    work = tmp / f"n{n}"
    work.mkdir()
    data = S.config_data(box, f"sqlite:///{work / 'mailbot.db'}", outgoing_maildir=work / "sent")
    if source == "maildir":
        # the same files, read by mailbot's Maildir source
        data["mailbox"] = {"source": "maildir", "maildir_path": str(server.root / "mail" / box.user)}
    cfg = work / "config.json"
    cfg.write_text(json.dumps({"config": data}))
    print(f"{n:>6} messages: loaded into {box.user}'s Maildir and indexed by Dovecot in {load_s:.1f} s; "
          f"running mailbot ({source} source) in a subprocess ...", flush=True)
    out_path = work / "child.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(cfg)], stdout=out)
    start = time.monotonic()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    samples: list[dict[str, Any]] = []
    sampler = threading.Thread(target=_sample, args=(proc.pid, work / "mailbot.db", start, samples), daemon=True)
    sampler.start()
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix in earlier children)
    _, status, usage = os.wait4(proc.pid, 0)
    killer.cancel()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    timed_out = proc.returncode == -9
    lines = out_path.read_text().splitlines()
    wall = time.monotonic() - start
    result: dict[str, Any] = {"n": n, "load_s": round(load_s, 1), "wall_s": round(wall, 1),
                              "maxrss_kb": usage.ru_maxrss, "exit": proc.returncode, "timed_out": timed_out}
    if lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    if samples:
        last = samples[-1]
        result["progress"] = {k: last[k] for k in ("stored", "done", "marked", "sent")}
        result["samples"] = [*samples[:: max(1, len(samples) // 12)], last]
    print(f"{n:>6} messages: exit {proc.returncode}{' (killed: timeout)' if timed_out else ''}, "
          f"{result.get('done', '?')} done, {result.get('sent', '?')} replies, {result.get('left', '?')} left in "
          f"INBOX, {result.get('elapsed_s', '?')} s in run_once ({result.get('passes', '?')} pass(es)); "
          f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB (VmHWM {result.get('vmhwm_kb', -1) / 1024:.1f} MiB, "
          f"{result.get('rss_start_kb', -1) / 1024:.1f} MiB after start-up)", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--source", choices=("imap", "maildir"), default="imap")
    ap.add_argument("--timeout", type=float, default=360,
                    help="stop the large run after this many seconds and report the peak so far (default 360)")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    import _servers as S

    templates = S.load_forwards()
    copier = S.Copier(templates, tag=f"{time.time_ns():x}")
    print(f"corpus: {len(templates)} forwards; backlogs of {args.small} and {args.large} copies "
          f"(unique Message-IDs, senders, rejection IPs); SQLite; outgoing to a Maildir")
    results: dict[str, Any] = {"bench": "backlog", "source": args.source, "target_ratio": TARGET}
    with tempfile.TemporaryDirectory(prefix="mailbot-backlog-") as tmpdir, S.dovecot() as server:
        tmp = Path(tmpdir)
        small = run_size(server, copier, args.small, args.source, tmp, 1800)
        large = run_size(server, copier, args.large, args.source, tmp, args.timeout)
    ratio = large["maxrss_kb"] / small["maxrss_kb"] if small["maxrss_kb"] else float("nan")
    # the child reports its start-up RSS only when it finishes; a killed run has none
    above: float | None = None
    if "rss_start_kb" in large and "rss_start_kb" in small:
        above = (large["maxrss_kb"] - large["rss_start_kb"]) / max(small["maxrss_kb"] - small["rss_start_kb"], 1)
    above_text = f"{above:.2f}x" if above is not None else "n/a (the large run did not finish)"
    partial = ""
    if large["timed_out"]:
        p = large.get("progress", {})
        partial = (f" -- PARTIAL: the {args.large} run was stopped after {args.timeout:.0f} s having stored "
                   f"{p.get('stored')}, processed {p.get('done')}, marked {p.get('marked')} and replied to "
                   f"{p.get('sent')} (raise --timeout to drain it all)")
    print(f"peak RSS {args.large} / {args.small}: {ratio:.2f} (target < {TARGET}: "
          f"{'met' if ratio < TARGET else 'NOT met'}); growth above start-up RSS: {above_text}{partial}")
    results.update(small=small, large=large, large_partial=large["timed_out"], ratio=round(ratio, 3),
                   growth_ratio=round(above, 3) if above is not None else None, target_met=ratio < TARGET)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
