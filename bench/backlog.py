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
       .venv/bin/python bench/backlog.py --big 30 [--big-mb 24] [--good 10]

`--big N` runs the other case instead (issue #12): N messages of --big-mb MB each (a
forward with a large attachment) interleaved with --good ordinary forwards, and reports
the peak RSS against the configured bound: the most message bytes mailbot may hold at
once, max(mailbox.batch_bytes, mailbox.max_message_bytes) (before batch_bytes existed,
batch_size x max_message_bytes).
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
import re
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

    from mailbot.app import Desk
    from mailbot.config import parse
    from mailbot.store.tables import OutboxMail, StoredMessage

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


def _run_child(work: Path, cfg: Path, timeout: float) -> tuple[int, Any, list[dict[str, Any]], list[str], float]:
    """Run mailbot on `cfg` in a child process, killed after `timeout` s: its exit code, its own
    rusage, the progress samples, its output lines and the wall time."""
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
    return os.waitstatus_to_exitcode(status), usage, samples, out_path.read_text().splitlines(), \
        time.monotonic() - start


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
    code, usage, samples, lines, wall = _run_child(work, cfg, timeout)
    timed_out = code == -9
    result: dict[str, Any] = {"n": n, "load_s": round(load_s, 1), "wall_s": round(wall, 1),
                              "maxrss_kb": usage.ru_maxrss, "exit": code, "timed_out": timed_out}
    if lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    if samples:
        last = samples[-1]
        result["progress"] = {k: last[k] for k in ("stored", "done", "marked", "sent")}
        result["samples"] = [*samples[:: max(1, len(samples) // 12)], last]
    print(f"{n:>6} messages: exit {code}{' (killed: timeout)' if timed_out else ''}, "
          f"{result.get('done', '?')} done, {result.get('sent', '?')} replies, {result.get('left', '?')} left in "
          f"INBOX, {result.get('elapsed_s', '?')} s in run_once ({result.get('passes', '?')} pass(es)); "
          f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB (VmHWM {result.get('vmhwm_kb', -1) / 1024:.1f} MiB, "
          f"{result.get('rss_start_kb', -1) / 1024:.1f} MiB after start-up)", flush=True)
    return result


def big_message(copy: bytes, i: int, tag: str, blob: bytes) -> bytes:
    """A forward of `copy` (attached as message/rfc822) with a large attachment of logs after it."""
    m = re.search(rb"^From:[^\r\n]*", copy, re.MULTILINE | re.IGNORECASE)
    sender = m.group(0) if m else b"From: dana.ops@mailops.example"
    head = (sender + b"\r\nTo: delist@example.org\r\nSubject: Fwd: undeliverable (with our logs)\r\n"
            + f"Message-ID: <big.{tag}.{i}@forwarder.example>\r\n".encode()
            + b"Date: Tue, 03 Jun 2025 11:24:03 +0000\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"=_big_\"\r\n\r\n")
    return (head + b"--=_big_\r\nContent-Type: text/plain\r\n\r\nPlease delist us; the bounce and our logs are "
            b"attached.\r\n--=_big_\r\nContent-Type: message/rfc822\r\n\r\n" + copy
            + b"\r\n--=_big_\r\nContent-Type: application/octet-stream; name=\"logs.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--=_big_--\r\n")


def run_big(server: Any, copier: Any, big: int, size_mb: float, good: int, tmp: Path, timeout: float,
            tag: str) -> dict[str, Any]:
    """`big` large messages with `good` ordinary forwards between them, drained by a subprocess."""
    import base64

    import _servers as S

    blob = base64.encodebytes(os.urandom(int(size_mb * 1024 * 1024 * 3 / 4))).replace(b"\n", b"\r\n")
    every = max(1, big // max(good, 1))

    def messages() -> Any:
        g = 0
        for i in range(big):
            yield big_message(copier.copy(i), i, tag, blob)
            if good and i % every == every - 1 and g < good:
                yield copier.copy(100_000 + g)
                g += 1
        for j in range(g, good):
            yield copier.copy(100_000 + j)

    t0 = time.perf_counter()
    box, n = S.fill_mailbox(server, messages(), prefix="big-")
    load_s = time.perf_counter() - t0
    work = tmp / "big"
    work.mkdir()
    data = S.config_data(box, f"sqlite:///{work / 'mailbot.db'}", outgoing_maildir=work / "sent")
    cfg = work / "config.json"
    cfg.write_text(json.dumps({"config": data}))
    total_mb = (big * len(blob) + good * 3000) / 1024 / 1024
    print(f"{big} messages of {size_mb:g} MB and {good} ordinary forwards ({n} in all, {total_mb:.0f} MB): loaded in "
          f"{load_s:.1f} s; running mailbot in a subprocess ...", flush=True)
    code, usage, _samples, lines, wall = _run_child(work, cfg, timeout)
    result: dict[str, Any] = {"big": big, "big_mb": size_mb, "good": good, "messages": n,
                              "wall_s": round(wall, 1), "maxrss_kb": usage.ru_maxrss,
                              "exit": code, "timed_out": code == -9}
    if lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--source", choices=("imap", "maildir"), default="imap")
    ap.add_argument("--timeout", type=float, default=360,
                    help="stop the large run after this many seconds and report the peak so far (default 360)")
    ap.add_argument("--big", type=int, default=0, help="the large-message case: this many large messages")
    ap.add_argument("--big-mb", type=float, default=24.0, help="size of each large message in MB (default 24)")
    ap.add_argument("--good", type=int, default=10, help="ordinary forwards among the large ones (default 10)")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    import _servers as S

    if args.big:
        big_main(args)
        return

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


def big_main(args: argparse.Namespace) -> None:
    import _servers as S

    from mailbot.config import MailboxConfig

    tag = f"{time.time_ns():x}"
    copier = S.Copier(S.load_forwards(), tag=tag)
    with tempfile.TemporaryDirectory(prefix="mailbot-backlog-") as tmpdir, S.dovecot() as server:
        r = run_big(server, copier, args.big, args.big_mb, args.good, Path(tmpdir), max(args.timeout, 1800), tag)
    m = MailboxConfig(source="maildir", maildir_path="x")  # the defaults, as the bench config uses them
    batch_bytes = getattr(m, "batch_bytes", None)
    bound = max(batch_bytes, m.max_message_bytes) if batch_bytes else m.batch_size * m.max_message_bytes
    start_kb = r.get("rss_start_kb", 0)
    growth = r["maxrss_kb"] * 1024 - start_kb * 1024
    mib = 1024 * 1024
    print(f"exit {r['exit']}{' (killed: timeout)' if r['timed_out'] else ''}: {r.get('done', '?')} of "
          f"{r['messages']} messages done, {r.get('sent', '?')} replies, {r.get('left', '?')} left in INBOX, "
          f"{r.get('elapsed_s', '?')} s")
    print(f"peak RSS {r['maxrss_kb'] / 1024:.0f} MiB ({start_kb / 1024:.0f} MiB after start-up, growth "
          f"{growth / mib:.0f} MiB); configured bound on message bytes held at once: {bound / mib:.0f} MiB "
          f"(batch_bytes {batch_bytes and batch_bytes / mib}, max_message_bytes {m.max_message_bytes / mib:.0f} MiB, "
          f"batch_size {m.batch_size}); growth / bound = {growth / bound:.2f}")
    print(json.dumps({"bench": "backlog-big", **r, "bound_bytes": bound, "batch_bytes": batch_bytes,
                      "max_message_bytes": m.max_message_bytes, "batch_size": m.batch_size,
                      "growth_bytes": growth, "growth_over_bound": round(growth / bound, 3)}))


if __name__ == "__main__":
    main()
