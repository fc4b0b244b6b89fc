"""Peer: mailbot against django-helpdesk on the same freshly loaded mailbox (issue #16).

    .venv/bin/python bench/peer.py [N] [--rounds 5] [--backends sqlite,postgresql]
                                   [--peer-bench DIR] [--helpdesk-venv DIR] [--also DIR]

django-helpdesk is set up as `../shared/peer-bench` sets it up (its Django site, its
queue settings, `manage.py get_email`); that folder is read-only and nothing of it is
committed here: it is copied into a temporary directory at run time, and
django-helpdesk is installed from its `requirements.lock` into a virtualenv kept in
`~/.cache/mailbot-bench/` (made on first use; `--helpdesk-venv` names another).

N forwards are generated once by the peer bench's `gen-ndrs.py` (seed 1). Every
measured run gets a fresh user of one private Dovecot holding those same N messages
(written into its Maildir and indexed before anything is timed), a fresh database
and the one SMTP sink (its own process, counting what it accepts):

- django-helpdesk: a migrated SQLite copied fresh, its queue pointed at the user;
  one `manage.py get_email` (one poll takes the whole INBOX, acknowledging each
  new ticket by mail);
- mailbot: `mailbot poll --once` (fetch, process, move, then send every reply) on
  SQLite and on PostgreSQL, the schema made first (not timed).

Each timed figure is the whole command as an operator runs it, start-up included.
A round runs each contender once, the order rotating from round to round; its
ratios (mailbot's rate / django-helpdesk's) use that round's django-helpdesk run,
so load from others on the machine weighs on both. Prints each run and each
round, the medians, and ends with one JSON line. `--also DIR` adds mailbot from
another source tree (a `git worktree` or `git archive` of an earlier commit) to
every round, for before/after figures taken side by side.

A benchmark, not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers as S

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEER_BENCH = REPO.parent / "shared" / "peer-bench"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mailbot-bench"

# Points the bench site's queue (peer-bench's bench_queue.py settings) at one user of our Dovecot.
QUEUE_SCRIPT = """\
import os, sys
from datetime import timedelta
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
import django
django.setup()
from django.utils import timezone
from helpdesk.models import Queue
Queue.objects.update_or_create(slug="delist", defaults=dict(
    title="Delisting requests", email_address="delist@example.org", allow_email_submission=True,
    email_box_type="imap", email_box_host="127.0.0.1", email_box_port=int(sys.argv[2]), email_box_ssl=False,
    email_box_user=sys.argv[3], email_box_pass=sys.argv[4], email_box_imap_folder="INBOX",
    email_box_interval=0, email_box_last_check=timezone.now() - timedelta(days=1)))
"""

STATS_SCRIPT = """\
import os, sys, json
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
import django
django.setup()
from helpdesk.models import FollowUp, Ticket
print(json.dumps({"tickets": Ticket.objects.count(), "followups": FollowUp.objects.count()}))
"""


@dataclass
class Run:
    who: str
    seconds: float
    cpu_seconds: float
    n: int
    tickets: int
    replies: int
    left_in_inbox: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def line(self) -> str:
        return (f"{self.who:22} {self.n} msgs in {self.seconds:7.2f} s = {self.rate:7.1f} msg/s, "
                f"CPU {1000 * self.cpu_seconds / self.n:5.1f} ms/msg; tickets {self.tickets}, "
                f"replies at the SMTP sink {self.replies}, left in INBOX {self.left_in_inbox}")

    def as_json(self) -> dict[str, Any]:
        return {"who": self.who, "seconds": round(self.seconds, 3), "msgs_per_s": round(self.rate, 2),
                "cpu_ms_per_msg": round(1000 * self.cpu_seconds / self.n, 2), "tickets": self.tickets,
                "replies": self.replies, "left_in_inbox": self.left_in_inbox, **self.extra}


def timed(cmd: list[str], env: dict[str, str], log: Path, timeout: float,
          cwd: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process and the children it waited for, exit status)."""
    with log.open("ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd)
        deadline = time.monotonic() + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.01)
        except BaseException:  # stopped: take the child along
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


class Helpdesk:
    """django-helpdesk as the peer bench runs it, from a copy of that folder in `tmp`."""

    def __init__(self, peer_bench: Path, venv: Path, tmp: Path) -> None:
        self.dir = tmp / "peer-bench"
        shutil.copytree(peer_bench, self.dir, ignore=shutil.ignore_patterns(".venv", "state", "__pycache__"))
        for root, dirs, files in os.walk(self.dir):  # shared/ is read-only, and so is a plain copy of it
            for name in [*dirs, *files]:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o200)
        self.dir.chmod(0o755)
        self.python = str(venv / "bin" / "python")
        self.site = self.dir / "helpdesk"
        (tmp / "hd_queue.py").write_text(QUEUE_SCRIPT)
        (tmp / "hd_stats.py").write_text(STATS_SCRIPT)
        self.tmp = tmp
        self.pristine = tmp / "hd-pristine"
        self.pristine.mkdir()
        self._run([self.python, str(self.site / "manage.py"), "migrate", "-v0"], self.pristine)

    def _run(self, cmd: list[str], state: Path, **env: str) -> str:
        out = subprocess.run(cmd, env={**os.environ, "BENCH_STATE": str(state), **env}, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return out.stdout

    def generate(self, n: int) -> list[bytes]:
        out = self.tmp / f"ndrs-{n}"
        self._run([self.python, str(self.dir / "gen-ndrs.py"), str(n), str(out), "--seed", "1"], self.tmp)
        return [p.read_bytes() for p in sorted(out.glob("*.eml"))]

    def run(self, box: S.Mailbox, sink: S.SmtpSink, n: int, k: int) -> Run:
        state = self.tmp / f"hd-state-{k}"
        state.mkdir()
        shutil.copy(self.pristine / "db.sqlite3", state / "db.sqlite3")
        self._run([self.python, str(self.tmp / "hd_queue.py"), str(self.site), str(box.port), box.user,
                   box.password], state)
        before = sink.received
        wall, cpu, rc = timed([self.python, str(self.site / "manage.py"), "get_email", "--quiet"],
                              {**os.environ, "BENCH_STATE": str(state), "SMTP_PORT": str(sink.port)},
                              self.tmp / "helpdesk.log", timeout=max(600.0, n))
        stats = json.loads(self._run([self.python, str(self.tmp / "hd_stats.py"), str(self.site)], state))
        replies = sink.wait_for(before + stats["tickets"], 5) - before
        return Run("django-helpdesk", wall, cpu, n, stats["tickets"], replies, box.count(),
                   {"exit": rc, "followups": stats["followups"]})


def run_mailbot(label: str, source: Path, box: S.Mailbox, db_url: str, sink: S.SmtpSink, n: int,
                tmp: Path, k: int) -> Run:
    """`mailbot poll --once` from the source tree `source` on `box`, replies to `sink`."""
    data = S.config_data(box, db_url, smtp_port=sink.port)
    password = data["mailbox"].pop("password")
    config = S.write_config(tmp / f"mailbot-{k}.toml", data)
    env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": password, "PYTHONPATH": str(source)}
    log = tmp / "mailbot.log"
    base = [sys.executable, "-m", "mailbot", "-c", str(config)]
    # run from the tree itself: `python -m` puts the working directory first on the path
    made = subprocess.run([*base, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=300, cwd=source)
    if made.returncode != 0:
        raise SystemExit(f"mailbot db upgrade failed:\n{made.stdout}{made.stderr}")
    before = sink.received
    wall, cpu, rc = timed([*base, "poll", "--once"], env, log, timeout=max(600.0, n), cwd=source)
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    try:
        counts = S.db_counts(engine)
    finally:
        engine.dispose()
    replies = sink.wait_for(before + counts["outbox_sent"], 10) - before
    return Run(label, wall, cpu, n, counts["tickets"], replies, box.count(),
               {"exit": rc, "processed": counts["processed"], "quarantined": counts["quarantined"]})


def venv_for(peer_bench: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    lock = peer_bench / "requirements.lock"
    venv = CACHE / f"peer-helpdesk-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    if not (venv / "bin" / "python").exists():
        print(f"installing django-helpdesk from {lock} into {venv} (once)", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(lock)], check=True)
    return venv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--peer-bench", default=os.environ.get("MAILBOT_PEER_BENCH", str(DEFAULT_PEER_BENCH)))
    ap.add_argument("--helpdesk-venv", help="a virtualenv with the peer bench's requirements.lock installed")
    ap.add_argument("--also", metavar="DIR", help="also run mailbot from this source tree (before/after)")
    args = ap.parse_args()
    # a SIGTERM stops the servers and removes the temporary directory, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    peer_bench = Path(args.peer_bench).resolve()
    if not (peer_bench / "helpdesk" / "manage.py").exists():
        raise SystemExit(f"no peer bench at {peer_bench} (--peer-bench or MAILBOT_PEER_BENCH)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    trees = {"mailbot": REPO, **({"also": Path(args.also).resolve()} if args.also else {})}
    venv = venv_for(peer_bench, args.helpdesk_venv)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    results: dict[str, Any] = {"bench": "peer", "n": args.n, "rounds": [], "trees": {k: str(v) for k, v in
                                                                                  trees.items()}}
    with tempfile.TemporaryDirectory(prefix="mailbot-peer-") as tmpdir, S.dovecot() as server, \
            S.SmtpSink() as sink:
        tmp = Path(tmpdir)
        helpdesk = Helpdesk(peer_bench, venv, tmp)
        messages = [raw.replace(b"\r\n", b"\n") for raw in helpdesk.generate(args.n)]  # LF, as Dovecot stores
        n = len(messages)
        print(f"{n} forwards from gen-ndrs.py (seed 1), {sum(map(len, messages)) / 1e6:.1f} MB; "
              f"django-helpdesk from {venv}; mailbot from {', '.join(f'{k}={v}' for k, v in trees.items())}")
        contenders = ["helpdesk", *(f"{t}:{b}" for t in trees for b in backends)]
        k = 0
        for r in range(args.rounds):
            order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
            runs: dict[str, Run] = {}
            for who in order:
                k += 1
                box, _ = S.fill_mailbox(server, messages, prefix=f"p{k}x")
                if who == "helpdesk":
                    runs[who] = helpdesk.run(box, sink, n, k)
                else:
                    tree, backend = who.split(":")
                    if backend == "sqlite":
                        runs[who] = run_mailbot(who, trees[tree], box, f"sqlite:///{tmp / f'mb-{k}.db'}", sink, n,
                                                tmp, k)
                    else:
                        with S.postgres_database() as url:
                            if url is None:
                                continue
                            runs[who] = run_mailbot(who, trees[tree], box, url, sink, n, tmp, k)
                print(f"round {r + 1} {runs[who].line()}", flush=True)
            peer = runs["helpdesk"]
            ratios = {who: round(run.rate / peer.rate, 2) for who, run in runs.items() if who != "helpdesk"}
            # CPU a message, django-helpdesk's over mailbot's: the figure least moved by others' load
            cpu = {who: round(peer.cpu_seconds / run.cpu_seconds, 2) for who, run in runs.items() if who != "helpdesk"}
            print(f"round {r + 1} ratios to django-helpdesk: "
                  + ", ".join(f"{who} {ratio:.2f}x" for who, ratio in ratios.items())
                  + "; CPU a message, django-helpdesk's over mailbot's: "
                  + ", ".join(f"{who} {ratio:.2f}x" for who, ratio in cpu.items()), flush=True)
            results["rounds"].append({"runs": [run.as_json() for run in runs.values()], "ratios": ratios,
                                      "cpu_ratios": cpu})
        medians: dict[str, float] = {}
        for who in contenders[1:]:
            got = [rnd["ratios"][who] for rnd in results["rounds"] if who in rnd["ratios"]]
            if got:
                medians[who] = round(statistics.median(got), 2)
        rates = {who: round(statistics.median(run["msgs_per_s"] for rnd in results["rounds"] for run in rnd["runs"]
                                              if run["who"] == (who if who != "helpdesk" else "django-helpdesk")), 1)
                 for who in contenders}
        cpu_medians = {who: round(statistics.median(rnd["cpu_ratios"][who] for rnd in results["rounds"]
                                                    if who in rnd["cpu_ratios"]), 2) for who in medians}
        print("median ratio to django-helpdesk over "
              f"{args.rounds} rounds: " + ", ".join(f"{who} {m:.2f}x" for who, m in medians.items())
              + "; CPU a message: " + ", ".join(f"{who} {m:.2f}x" for who, m in cpu_medians.items()))
        print("median rates (msg/s): " + ", ".join(f"{who} {v}" for who, v in rates.items()))
        results["median_ratio"] = medians
        results["median_cpu_ratio"] = cpu_medians
        results["median_msgs_per_s"] = rates
    print(json.dumps(results))


if __name__ == "__main__":
    main()
