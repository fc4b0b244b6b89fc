"""One daemon against two on one PostgreSQL: how much faster is a backlog drained?

    .venv/bin/python bench/scaleout.py [N] [--daemons 1,2]

For each daemon count: N forwarded NDRs from the corpus in a fresh mailbox of a
private Dovecot, a fresh PostgreSQL database, that many `mailbot run` processes,
and the time until every reply has reached a local SMTP server (counted in a
process of its own). Prints the rates and the speed-up of each count over one
daemon, measured in the same run; ends with one JSON line of the figures. On this
2-core machine Dovecot, PostgreSQL, the SMTP sink and the daemons share the cores:
see bench/README.md for what that means for the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _servers


def drain(server: _servers.DovecotServer, n: int, daemons: int, tag: str) -> dict[str, float]:
    copier = _servers.Copier(_servers.load_forwards(), tag)
    box, _ = _servers.fill_mailbox(server, copier.copies(n), prefix=tag)
    with _servers.postgres_database() as db_url, _servers.SmtpSink() as sink, \
            tempfile.TemporaryDirectory() as tmp:
        if db_url is None:
            raise SystemExit("PostgreSQL is not reachable on 127.0.0.1:5432")
        data = _servers.config_data(box, db_url, smtp_port=sink.port)
        data["schedule"] = {"poll_seconds": 1, "flush_seconds": 1}
        data["log"] = {"level": "WARNING"}
        password = data["mailbox"].pop("password")
        config = Path(tmp) / "mailbot.toml"
        _servers.write_config(config, data)
        # one daemon migrates the schema first, so the timed part is the drain alone
        subprocess.run([sys.executable, "-m", "mailbot", "-c", str(config), "db", "upgrade"], check=True,
                       capture_output=True)
        env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": password}
        start = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(config), "run"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(daemons)]
        try:
            received = sink.wait_for(n, timeout=1800)
            elapsed = time.monotonic() - start
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
    return {"daemons": daemons, "messages": n, "replies": received, "seconds": round(elapsed, 2),
            "msgs_per_s": round(received / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--daemons", default="1,2")
    args = ap.parse_args()
    counts = [int(c) for c in args.daemons.split(",")]
    results = []
    with _servers.dovecot() as server:
        for k in counts:
            r = drain(server, args.n, k, f"so{k}")
            results.append(r)
            print(f"{k} daemon(s): {r['replies']} of {r['messages']} replies in {r['seconds']} s "
                  f"= {r['msgs_per_s']} msg/s")
    base = results[0]["msgs_per_s"]
    for r in results:
        r["speedup"] = round(r["msgs_per_s"] / base, 2) if base else None
    print("speed-up over one daemon: " + ", ".join(f"{r['daemons']}: {r['speedup']}x" for r in results))
    print(json.dumps({"bench": "scaleout", "cores": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
