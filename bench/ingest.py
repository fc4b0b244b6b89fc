"""Ingest: mailbot against the physical limit of this machine (issue #6).

Loads N forwarded NDRs from the corpus (copy i of file i mod the corpus; each copy
with its own Message-ID, sender domain and, where the rejection IP is written
literally, its own IP) into users of a private Dovecot, then for SQLite and for
PostgreSQL measures in the same run:

(a) baseline: a plain imapclient session fetching all N bodies (BODY.PEEK[]) in
    batches of 100 (connect, login, EXAMINE, SEARCH ALL included; median of 3);
(a2) the work floor, for scale (not the issue's baseline): the same fetch, plus for
    each message what any implementation must do at the least: parse it with the
    standard library (`email.message_from_bytes`), insert it into SQLite (one commit per
    100) and send one small reply over one SMTP connection to the same server. What
    mailbot adds beyond that is its own work: extraction, policy, tickets, templates;
(b) mailbot: `Desk(config).run_once()` in this process, repeated until the INBOX is
    empty and the outbox has nothing queued, every reply delivered to an aiosmtpd
    server running in a process of its own (replies counted there). A fresh user
    with the same N messages and a fresh database per backend (mailbot MOVEs what it
    took to Processed). run_once takes the mail in batch by batch; from the second batch on,
    each batch's replies are sent beside the next batches by a process of its own
    (`mailbot.outgoing.beside`), and the flush after the poll sends what is left;
(c) the daemon: `mailbot run` as a process of its own on another fresh user and
    database, timed from its "mailbot running" line to the N-th reply at the SMTP
    server. It sends replies beside the processing, as operators run it.

Prints the rates, the ratios (b)/(a) and (c)/(a) (target >= 0.5), the CPU time of (a2) and (b) a
message (mailbot's process, its extraction worker and its sending process; on a shared machine
less moved by others' load than wall time), and where mailbot's time went:
the Desk's stages (fetch, process, mark_done, flush) timed by wrapping them during
that same run, with the time spent waiting on IMAP and SMTP inside them.
`--profile` adds a cProfile run (SQLite) of run_once and prints its top functions.
`--hop` adds (b) on SQLite with extraction in the bench process instead of the desk's
worker process, alternately, for what the process hop costs a message.
The last line is one JSON object of the figures.

Usage: .venv/bin/python bench/ingest.py [N] [--backends sqlite,postgresql] [--no-daemon] [--hop] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers as S
from imapclient import IMAPClient

import mailbot.app as desk_module
from mailbot.app import Desk
from mailbot.config import parse
from mailbot.extraction import extract
from mailbot.source import inbound

TARGET = 0.5
BATCH = 100


def baseline_fetch(box: S.Mailbox) -> tuple[float, int, int]:
    """(seconds, messages, bytes) for one plain fetch of every body in batches of 100."""
    t0 = time.perf_counter()
    c = IMAPClient(box.host, port=box.port, ssl=False, timeout=60)
    c.login(box.user, box.password)
    c.select_folder("INBOX", readonly=True)
    uids = sorted(c.search(["ALL"]))
    got = size = 0
    for i in range(0, len(uids), BATCH):
        data = c.fetch(uids[i:i + BATCH], ["BODY.PEEK[]"])
        got += len(data)
        size += sum(len(d[b"BODY[]"]) for d in data.values())
    c.logout()
    return time.perf_counter() - t0, got, size


def work_floor(box: S.Mailbox, sink: S.SmtpSink, tmp: Path) -> tuple[float, float]:
    """Seconds and CPU seconds for (a2): fetch, stdlib parse, SQLite insert (a commit per batch)
    and one SMTP send per message."""
    import email
    import smtplib
    import sqlite3

    db = sqlite3.connect(tmp / f"floor-{time.time_ns()}.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, subject TEXT, raw BLOB)")
    reply = (b"From: delist@example.org\r\nTo: sender@example.net\r\nSubject: received\r\n"
             b"Message-ID: <floor@example.org>\r\n\r\nWe have your request.\r\n")
    t0, c0 = time.perf_counter(), time.process_time()
    c = IMAPClient(box.host, port=box.port, ssl=False, timeout=60)
    c.login(box.user, box.password)
    c.select_folder("INBOX", readonly=True)
    uids = sorted(c.search(["ALL"]))
    smtp = smtplib.SMTP(sink.host, sink.port, timeout=60)
    for i in range(0, len(uids), BATCH):
        data = c.fetch(uids[i:i + BATCH], ["BODY.PEEK[]"])
        rows = []
        for d in data.values():
            raw = d[b"BODY[]"]
            msg = email.message_from_bytes(raw)
            rows.append((str(msg.get("Subject", "")), raw))
        with db:
            db.executemany("INSERT INTO m (subject, raw) VALUES (?, ?)", rows)
        for _ in rows:
            smtp.sendmail("delist@example.org", ["sender@example.net"], reply)
    smtp.quit()
    c.logout()
    db.close()
    return time.perf_counter() - t0, time.process_time() - c0


class StageTimer:
    """Wall time per stage, gathered by wrapping the Desk's methods during a real run_once."""

    STAGES = ("fetch", "process", "mark_done", "flush")
    """Top-level stages: one called inside another (processing and marking inside fetch, batch
    by batch) counts for itself only, not for the one around it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active: list[str] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            stage = name in self.STAGES
            outer = next((n for n in reversed(self.active) if n in self.STAGES), None) if stage else None
            self.active.append(name)
            try:
                return fn(*a, **k)
            finally:
                self.active.pop()
                took = time.perf_counter() - t0
                self.seconds[name] += took
                if outer is not None:
                    self.seconds[outer] -= took
                self.calls[name] += 1
        return timed

    def instrument(self, desk: Desk) -> Callable[[], None]:
        """Wrap the stages of `desk`; returns a function that undoes the module-level wrap."""
        orig_fetch = getattr(desk_module, "fetch", None)
        if orig_fetch is not None:
            desk_module.fetch = self.wrap("fetch", orig_fetch)  # type: ignore[attr-defined]
        desk.processor.run = self.wrap("process", desk.processor.run)  # type: ignore[method-assign]
        # inside processing: the two reads of a message, to show each is done once (issue #14): the
        # outer header block by the standard library here, the whole MIME tree in the extraction worker
        orig_headers = inbound.parse
        inbound.parse = self.wrap("headers", orig_headers)
        desk.processor.extract = self.wrap("extraction", desk.processor.extract)
        desk.mark_done = self.wrap("mark_done", desk.mark_done)  # type: ignore[method-assign]
        desk.flush = self.wrap("flush", desk.flush)  # type: ignore[method-assign]
        open_source, transport = desk.open_source, desk.transport

        def timed_source() -> Any:
            src = self.wrap("imap_connect", open_source)()
            src.listing = self.wrap("imap_fetch", src.listing)  # the sizes, asked first
            src.fetch = self.wrap("imap_fetch", src.fetch)
            src.mark_done_many = self.wrap("imap_mark", src.mark_done_many)
            return src

        def timed_transport() -> Any:
            tr = transport()
            tr.send = self.wrap("smtp_send", tr.send)
            return tr

        desk.open_source = timed_source  # type: ignore[method-assign]
        desk.transport = timed_transport  # type: ignore[method-assign]

        def undo() -> None:
            inbound.parse = orig_headers
            if orig_fetch is not None:
                desk_module.fetch = orig_fetch  # type: ignore[attr-defined]
        return undo


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far, from /proc; 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def drain(desk: Desk, box: S.Mailbox, cpu: dict[str, float] | None = None) -> tuple[float, int]:
    """run_once until the INBOX is empty and nothing is queued: (seconds, passes). With `cpu`,
    also the CPU seconds of this process ("main") and of the extraction workers ("worker"),
    less moved than wall time by others' load on a shared machine.

    The completion checks (doveadm, one SQL count) are not counted in the time.
    """
    elapsed, passes = 0.0, 0
    workers = desk.extractor.pids  # `extraction.workers` of them, started before the clock
    main0, worker0, children0 = time.process_time(), sum(map(process_cpu, workers)), children_cpu()
    while passes < 50:
        t0 = time.perf_counter()
        desk.run_once()
        elapsed += time.perf_counter() - t0
        passes += 1
        if box.count() == 0 and S.db_counts(desk.engine)["outbox_unsent"] == 0:
            break
    if cpu is not None:
        cpu["main"] = time.process_time() - main0  # includes the completion checks' few milliseconds
        # a worker replaced meanwhile (none is, on this mail) would take its CPU along: then 0
        cpu["worker"] = sum(map(process_cpu, workers)) - worker0 if workers == desk.extractor.pids else 0.0
        cpu["sending"] = children_cpu() - children0  # the sending process beside each poll, reaped by it
    return elapsed, passes


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (each poll's sending process, `outgoing.beside`)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, db_url: str, server: Any, copies: list[bytes], sink: S.SmtpSink,
            tmp: Path) -> dict[str, Any]:
    n = len(copies)
    base_box, _ = S.fill_mailbox(server, copies, prefix="base")
    runs = [baseline_fetch(base_box) for _ in range(3)]
    if any(r[1] != n for r in runs):
        print(f"{name}: WARNING the baseline fetched {[r[1] for r in runs]} of {n} messages")
    base_s = statistics.median(r[0] for r in runs)
    base_rate = n / base_s
    mb = runs[0][2] / 1e6
    print(f"{name:10} (a) imapclient fetch: {n} msgs ({mb:.1f} MB) in {base_s:.2f} s = {base_rate:.0f} msg/s "
          f"(median of {', '.join(f'{r[0]:.2f}' for r in runs)} s)")

    floor_box, _ = S.fill_mailbox(server, copies, prefix="floor")
    before = sink.received
    floor_s, floor_cpu = work_floor(floor_box, sink, tmp)
    sink.wait_for(before + n, 30)
    floor_rate = n / floor_s
    print(f"{name:10} (a2) work floor:      {n} msgs fetched, parsed, stored and answered in {floor_s:.2f} s = "
          f"{floor_rate:.0f} msg/s, CPU {1000 * floor_cpu / n:.2f} ms a message (for scale: the least any "
          "implementation does per message)")

    box, _ = S.fill_mailbox(server, copies, prefix="mb")
    t0 = time.perf_counter()
    desk = Desk(parse(S.config_data(box, db_url, smtp_port=sink.port), base_dir=str(tmp), environ={}))
    startup = time.perf_counter() - t0
    desk.extractor.start()  # its workers started before the clock, as the Desk's start-up is
    timer = StageTimer()
    undo = timer.instrument(desk)
    before = sink.received
    cpu: dict[str, float] = {}
    try:
        elapsed, passes = drain(desk, box, cpu)
    finally:
        undo()
    counts = S.db_counts(desk.engine)
    desk.close()
    desk.engine.dispose()
    delivered = sink.wait_for(before + counts["outbox_sent"], 10) - before
    rate = n / elapsed
    ratio = rate / base_rate
    left = box.count()
    print(f"{name:10} (b) mailbot:          {n} msgs in {elapsed:.2f} s = {rate:.1f} msg/s over {passes} "
          f"run_once pass(es) (Desk start-up {startup:.2f} s, not counted)")
    print(f"{name:10}     ratio (b)/(a) = {ratio:.3f}  (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})"
          f"; against the work floor (b)/(a2) = {rate / floor_rate:.3f}")
    cpu_ratio = floor_cpu / (cpu["main"] + cpu["worker"] + cpu["sending"])
    print(f"{name:10}     CPU: {1000 * cpu['main'] / n:.2f} ms a message in mailbot's process, "
          f"{1000 * cpu['worker'] / n:.2f} ms in its extraction worker, {1000 * cpu['sending'] / n:.2f} ms in "
          f"its sending process; all together against the work floor's CPU "
          f"{cpu_ratio:.3f} (less moved by others' load than the wall-time ratio)")
    print(f"{name:10}     outcome: processed {counts['processed']}, quarantined {counts['quarantined']}, "
          f"left unprocessed {counts['left_stored']}, left in INBOX {left}; tickets {counts['tickets']} "
          f"({counts['joined']} forwards joined an open ticket for the same IP); replies queued+sent "
          f"{counts['outbox_sent']}, unsent {counts['outbox_unsent']}, received by SMTP {delivered}")
    sec = timer.seconds
    stages = {k: round(sec.get(k, 0.0), 3) for k in
              ("imap_connect", "fetch", "imap_fetch", "process", "headers", "extraction", "mark_done", "imap_mark",
               "flush", "smtp_send")}
    accounted = sum(sec.get(k, 0.0) for k in ("fetch", "process", "mark_done", "flush", "imap_connect"))
    stages["other"] = round(max(elapsed - accounted, 0.0), 3)

    def part(label: str, key: str, inner: str | None = None, inner_label: str = "") -> str:
        s = sec.get(key, 0.0)
        txt = f"{label} {s:6.2f} s {100 * s / elapsed:5.1f}% ({1000 * s / n:.2f} ms/msg)"
        if inner:
            txt += f", of which {inner_label} {sec.get(inner, 0.0):.2f} s"
        return txt

    print(f"{name:10}     where mailbot's time went ({elapsed:.2f} s):")
    for line in (part("connect+login+select", "imap_connect"),
                 part("fetch (store raw)   ", "fetch", "imap_fetch", "waiting on IMAP FETCH"),
                 part("process             ", "process"),
                 f"  of which reading the outer headers {1000 * sec.get('headers', 0.0) / n:.3f} ms/msg "
                 f"({timer.calls['headers']} reads), extraction (the one parse of the MIME tree, in its worker) "
                 f"{1000 * sec.get('extraction', 0.0) / n:.3f} ms/msg ({timer.calls['extraction']} reads)",
                 part("mark_done           ", "mark_done", "imap_mark",
                      f"IMAP MOVE ({timer.calls['imap_mark']} commands)"),
                 part("flush (outbox)      ", "flush", "smtp_send", f"SMTP ({timer.calls['smtp_send']} sends)")
                 + f"; the rest sent beside, in the sending process ({1000 * cpu['sending'] / n:.2f} ms CPU/msg)",
                 f"other (run_once glue) {stages['other']:6.2f} s"):
        print(f"{name:10}       {line}")
    return {"baseline_msgs_per_s": round(base_rate, 1), "baseline_s": round(base_s, 3),
            "work_floor_msgs_per_s": round(floor_rate, 1), "ratio_to_work_floor": round(rate / floor_rate, 4),
            "mailbot_msgs_per_s": round(rate, 1), "mailbot_s": round(elapsed, 3), "ratio": round(ratio, 4),
            "work_floor_cpu_ms_per_msg": round(1000 * floor_cpu / n, 3), "cpu_ratio_to_work_floor": round(cpu_ratio, 4),
            "cpu_ms_per_msg": round(1000 * cpu["main"] / n, 3),
            "worker_cpu_ms_per_msg": round(1000 * cpu["worker"] / n, 3),
            "sending_cpu_ms_per_msg": round(1000 * cpu["sending"] / n, 3),
            "target_met": ratio >= TARGET, "passes": passes, "stages_s": stages, **counts,
            "left_in_inbox": left, "smtp_received": delivered}


def measure_daemon(name: str, db_url: str, server: Any, copies: list[bytes], sink: S.SmtpSink, tmp: Path,
                   base_rate: float) -> dict[str, Any]:
    """(c): `mailbot run` drains a fresh user's N messages; from its "mailbot running" line to the N-th reply."""
    n = len(copies)
    box, _ = S.fill_mailbox(server, copies, prefix="dm")
    data = S.config_data(box, db_url, smtp_port=sink.port)
    data["log"] = {"level": "INFO"}
    password = data["mailbox"].pop("password")
    config = tmp / f"daemon-{name}.toml"
    S.write_config(config, data)
    before = sink.received
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(config), "run"], text=True,
                            env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": password},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    running = threading.Event()
    ready_at = [0.0]

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not running.is_set() and "mailbot running" in line:
                ready_at[0] = time.perf_counter()
                running.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not running.wait(60):
            raise SystemExit(f"{name}: the daemon did not start")
        sink.wait_for(before + 1, timeout=120)
        first_at = time.perf_counter()
        got = sink.wait_for(before + n, timeout=max(120.0, n / 5)) - before
        done_at = time.perf_counter()
    finally:
        proc.terminate()
        proc.wait(30)
    elapsed = done_at - ready_at[0]
    rate = got / elapsed
    ratio = rate / base_rate
    first = first_at - ready_at[0]
    print(f"{name:10} (c) mailbot run:      {got} of {n} replies at the SMTP server {elapsed:.2f} s after the "
          f"daemon said it was running = {rate:.1f} msg/s (start-up {ready_at[0] - started:.2f} s, not counted); "
          f"the first reply after {first:.2f} s")
    print(f"{name:10}     ratio (c)/(a) = {ratio:.3f}  (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    return {"daemon_msgs_per_s": round(rate, 1), "daemon_s": round(elapsed, 3), "daemon_replies": got,
            "daemon_first_reply_s": round(first, 3),
            "daemon_ratio": round(ratio, 4), "daemon_target_met": ratio >= TARGET}


def measure_hop(server: Any, copies: list[bytes], sink: S.SmtpSink, tmp: Path, rounds: int = 2) -> dict[str, Any]:
    """(b) on SQLite with extraction in the desk's worker process, as shipped, and in the bench
    process itself (`desk.processor.extract = extract`), alternately on fresh users and databases:
    what the process hop costs a message."""
    n = len(copies)
    rates: dict[str, list[float]] = {"worker": [], "inline": []}
    for r in range(rounds):
        for mode in ("worker", "inline") if r % 2 == 0 else ("inline", "worker"):
            box, _ = S.fill_mailbox(server, copies, prefix=f"hop{mode[0]}")
            data = S.config_data(box, f"sqlite:///{tmp / f'hop-{mode}-{r}.db'}", smtp_port=sink.port)
            desk = Desk(parse(data, base_dir=str(tmp), environ={}))
            if mode == "inline":
                desk.processor.extract = extract
            elapsed, _ = drain(desk, box)
            desk.close()
            desk.engine.dispose()
            rates[mode].append(n / elapsed)
    worker, inline = statistics.median(rates["worker"]), statistics.median(rates["inline"])
    hop_ms = 1000 * (1 / worker - 1 / inline)
    print(f"sqlite     (b) extraction in its worker: {worker:.1f} msg/s, in the process: {inline:.1f} msg/s "
          f"(medians of {rounds}, alternating): the hop costs {hop_ms:.3f} ms a message "
          f"({100 * (inline / worker - 1):.1f}%)")
    return {"worker_msgs_per_s": round(worker, 1), "inline_msgs_per_s": round(inline, 1),
            "hop_ms_per_msg": round(hop_ms, 3), "runs": {k: [round(x, 1) for x in v] for k, v in rates.items()}}


def profile(server: Any, copies: list[bytes], sink: S.SmtpSink, tmp: Path, top: int = 30) -> list[dict[str, Any]]:
    box, _ = S.fill_mailbox(server, copies, prefix="prof")
    db = tmp / "profile.db"
    desk = Desk(parse(S.config_data(box, f"sqlite:///{db}", smtp_port=sink.port), base_dir=str(tmp), environ={}))
    prof = cProfile.Profile()
    prof.enable()
    drain(desk, box)
    prof.disable()
    desk.close()
    desk.engine.dispose()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(r"mailbot/", top)
    stats.sort_stats("tottime").print_stats(top)
    print("cProfile of run_once over the same messages (SQLite); cumulative in mailbot/, then tottime overall:")
    print(out.getvalue())
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"fn": f"{Path(file).name}:{line}:{fn}", "calls": nc, "tottime": round(tt, 3),
                     "cumtime": round(ct, 3)})
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:15]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--profile", action="store_true", help="also profile one run (SQLite) with cProfile")
    ap.add_argument("--no-daemon", action="store_true", help="skip (c), the `mailbot run` measurement")
    ap.add_argument("--hop", action="store_true",
                    help="also (b) on SQLite with extraction in the process instead of its worker (the hop's cost)")
    args = ap.parse_args()
    n = args.n
    templates = S.load_forwards()
    copier = S.Copier(templates, tag=f"{time.time_ns():x}")
    copies = list(copier.copies(n))
    rewritten = sum(1 for i in range(n) if templates[i % len(templates)].ips)
    print(f"corpus: {len(templates)} forwards under {S.corpus_dir() / 'forwards'}; N={n} copies, "
          f"{sum(map(len, copies)) / 1e6:.1f} MB, each with its own Message-ID and sender domain; "
          f"{rewritten} with their rejection IP rewritten to a unique one (only 5.7.511 forwards can join a ticket)")
    results: dict[str, Any] = {"bench": "ingest", "n": n, "target_ratio": TARGET}
    with tempfile.TemporaryDirectory(prefix="mailbot-ingest-") as tmpdir, S.dovecot() as server, \
            S.SmtpSink() as sink:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        S.fill_mailbox(server, copies, prefix="warm")
        print(f"load: {n} messages written into a Maildir and indexed by Dovecot in "
              f"{time.perf_counter() - t0:.2f} s (one such user per measured run)")
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "sqlite":
                results["sqlite"] = r = measure("sqlite", f"sqlite:///{tmp / 'bench.db'}", server, copies, sink, tmp)
                if not args.no_daemon:
                    r.update(measure_daemon("sqlite", f"sqlite:///{tmp / 'daemon.db'}", server, copies, sink, tmp,
                                            r["baseline_msgs_per_s"]))
            elif backend == "postgresql":
                with S.postgres_database() as url:
                    if url is not None:
                        results["postgresql"] = r = measure("postgresql", url, server, copies, sink, tmp)
                if not args.no_daemon:
                    with S.postgres_database() as url:
                        if url is not None:
                            r.update(measure_daemon("postgresql", url, server, copies, sink, tmp,
                                                    r["baseline_msgs_per_s"]))
            else:
                raise SystemExit(f"unknown backend {backend!r}")
        if args.hop:
            results["extraction_hop"] = measure_hop(server, copies, sink, tmp)
        if args.profile:
            results["profile_top_tottime"] = profile(server, copies, sink, tmp)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
