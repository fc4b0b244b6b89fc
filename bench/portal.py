"""The portal under load, against the server's own hello-world (issue #19).

    .venv/bin/python bench/portal.py [--seconds 5] [--clients 8] [--db sqlite|postgresql]

Measured in the same run, each as requests per second over `--seconds` with `--clients`
keep-alive clients (threads of httpx in this process) against one server process on loopback:

- baseline: a Starlette hello-world on uvicorn, run exactly as `mailbot portal` runs its app
  (one process, the same uvicorn settings): the bound of what the framework and server give;
- form page: `GET /` of `mailbot portal` (template, cookie, security headers);
- form sent: `POST /` for a listed IP (CSRF check, limits, lookup in the table, the request
  row and the confirmation mail queued; the portal's sender thread mails it to an SMTP sink);
- confirmation: `GET /confirm/<token>` (HMAC check, one read, the page).

Then the limits under a burst, against a second `mailbot portal` with the shipped limits and no
earlier requests: 100 form posts at once from one client (one browser), 50 for one address from
50 clients (each IP in its own network), 50 for one IP from 50 clients (clients behind the
trusted proxy, X-Forwarded-For): how many were taken, how many got 429 (the flood guard's or a
limit's), and whether every 429 said Retry-After.

Prints each figure and its ratio to the baseline; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    sys.path.insert(0, str(_p))

import httpx  # noqa: E402
from app import write_config  # noqa: E402
from listing import database  # noqa: E402
from servers import SMTPServer, free_port  # noqa: E402
from sqlalchemy import text  # noqa: E402

from mailbot.listing import admin  # noqa: E402
from mailbot.listing.admin import NewListing  # noqa: E402
from mailbot.store.engine import create_schema, make_engine  # noqa: E402

SECRET = "bench-portal-signing-key-0123456789abcdefghijklmnopq"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
LINK = re.compile(r"(/confirm/[A-Za-z0-9._-]+)")
HELLO = """
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def hello(request):
    return PlainTextResponse("hello")

app = Starlette(routes=[Route("/", hello)])
uvicorn.run(app, host="127.0.0.1", port={port}, proxy_headers=False, server_header=False, date_header=True,
            log_config=None, access_log=False)
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on {port} exited {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


@contextlib.contextmanager
def server(argv: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def portal(workdir: Path, db_url: str, smtp: SMTPServer, name: str, **portal_cfg: Any) -> Any:
    port = free_port()
    path = write_config(workdir / f"{name}.toml", {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"host": smtp.host, "port": smtp.port, "security": "none", "from_address": "delist@example.org"},
        "database": {"url": db_url}, "policy": {"allow_ranges": ["198.18.0.0/15"]},
        "listing": {"source": "table", "cache_seconds": 0}, "portal": portal_cfg, "log": {"level": "WARNING"}})
    return server([sys.executable, "-m", "mailbot", "-c", str(path), "portal", "--port", str(port)], port,
                  {"MAILBOT_PORTAL_SECRET": SECRET}, workdir / f"{name}.log")


def rate(base: str, clients: int, seconds: float, prepare: Callable[[httpx.Client], Any],
         one: Callable[[httpx.Client, Any, int], httpx.Response]) -> tuple[float, Counter[int]]:
    """Requests per second of `one` over `seconds`, `clients` threads each on its own keep-alive connection."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    done = [0]
    start = threading.Event()
    stop_at = [0.0]

    def worker(k: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            state = prepare(c)
            start.wait()
            n, seen = 0, Counter[int]()
            while time.monotonic() < stop_at[0]:
                seen[one(c, state, k * 1_000_000 + n).status_code] += 1
                n += 1
            with lock:
                done[0] += n
                statuses.update(seen)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every client has its page and cookie
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.set()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - began), statuses


def form_state(c: httpx.Client) -> str:
    m = CSRF.search(c.get("/").text)
    assert m, "no form"
    return m.group(1)


def bench_ip(n: int) -> str:
    return f"198.18.{(n >> 8) % 256}.{n % 256}"


def burst(base: str, n: int, make: Callable[[int], tuple[dict[str, str], dict[str, str]]],
          one_browser: bool = False) -> dict[str, Any]:
    """n form posts at once, each from a browser that loaded the form first (or all from one)."""
    browsers: list[tuple[httpx.Client, dict[str, str]]] = []
    shared: httpx.Client | None = None
    for k in range(n):
        data, headers = make(k)
        if one_browser and shared is not None:
            browsers.append((shared, {**data, "csrf": browsers[0][1]["csrf"]}))
            continue
        c = httpx.Client(base_url=base, timeout=30, headers=headers)
        m = CSRF.search(c.get("/").text)
        browsers.append((c, {**data, "csrf": m.group(1) if m else ""}))
        shared = c
    with ThreadPoolExecutor(min(n, 50)) as pool:
        answers = list(pool.map(lambda b: b[0].post("/", data=b[1]), browsers))
    for c in {id(c): c for c, _ in browsers}.values():
        c.close()
    kinds = Counter("taken" if r.status_code in (200, 303) else
                    "429 flood" if r.status_code == 429 and r.headers.get("content-type", "").startswith("text/plain")
                    else "429 limit" if r.status_code == 429 else str(r.status_code) for r in answers)
    retry = all("retry-after" in r.headers for r in answers if r.status_code == 429)
    return {**dict(kinds), "retry_after_on_every_429": retry}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = ap.parse_args()
    smtp = SMTPServer()
    smtp.start()
    figures: dict[str, Any] = {"db": args.db, "seconds": args.seconds, "clients": args.clients}
    try:
        with tempfile.TemporaryDirectory() as d, database(args.db) as url:
            workdir = Path(d)
            engine = make_engine(url)
            create_schema(engine)
            for n in range(256):
                admin.add(engine, NewListing(network=ipaddress.ip_network(bench_ip(n)), category="5.7.606"), "bench")
            engine.dispose()

            hello_port = free_port()
            (workdir / "hello.py").write_text(HELLO.replace("{port}", str(hello_port)))
            with server([sys.executable, str(workdir / "hello.py")], hello_port, {}, workdir / "hello.log") as base:
                hello, _ = rate(base, args.clients, args.seconds, lambda c: None, lambda c, s, n: c.get("/"))
            figures["hello_rps"] = round(hello)
            print(f"baseline: Starlette hello-world on uvicorn  {hello:8.0f} req/s")

            open_limits = {"requests_per_minute": 10**9, "client_per_hour": 10**9, "address_per_day": 10**9,
                           "ip_per_day": 10**9, "network_per_day": 10**9}
            with portal(workdir, url, smtp, "load", **open_limits) as base:
                form, st1 = rate(base, args.clients, args.seconds, lambda c: None, lambda c, s, n: c.get("/"))
                sent, st2 = rate(base, args.clients, args.seconds, form_state, lambda c, s, n: c.post(
                    "/", data={"csrf": s, "address": f"b{n}@bench.example", "ip": bench_ip(n % 256)}))
                with httpx.Client(base_url=base) as c:
                    token = form_state(c)
                    c.post("/", data={"csrf": token, "address": "link@bench.example", "ip": bench_ip(1)})
                deadline = time.monotonic() + 30
                link = None
                while link is None and time.monotonic() < deadline:
                    for m in list(smtp.messages):
                        if b"link@bench.example" in m.data.split(b"\r\n\r\n")[0]:
                            found = LINK.search(m.data.decode("ascii", "replace").replace("=\r\n", ""))
                            link = found.group(1) if found else None
                    time.sleep(0.2)
                assert link, "no confirmation mail reached the SMTP sink"
                confirm, st3 = rate(base, args.clients, args.seconds, lambda c: None, lambda c, s, n: c.get(link))
            for label, value, st in (("form page (GET /)", form, st1), ("form sent (POST /, listed IP)", sent, st2),
                                     ("confirmation page (GET /confirm/...)", confirm, st3)):
                print(f"{label:<38} {value:8.0f} req/s  {value / hello:5.2f} of the baseline  statuses {dict(st)}")
            figures.update({"form_rps": round(form), "form_post_rps": round(sent), "confirm_rps": round(confirm),
                            "form_ratio": round(form / hello, 3), "form_post_ratio": round(sent / hello, 3),
                            "confirm_ratio": round(confirm / hello, 3), "mails_at_sink": len(smtp.messages)})

            engine = make_engine(url)  # the burst starts from no requests: the load above counted many
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM portal_request"))
            engine.dispose()
            with portal(workdir, url, smtp, "limits") as base:
                one_client = burst(base, 100, lambda k: ({"address": f"c{k}@bench.example", "ip": bench_ip(k)}, {}),
                                   one_browser=True)
                one_address = burst(base, 50, lambda k: ({"address": "victim@bench.example", "ip": f"198.19.{k}.1"},
                                                         {"X-Forwarded-For": f"192.0.2.{k + 1}"}))
                one_ip = burst(base, 50, lambda k: ({"address": f"i{k}@bench.example", "ip": "198.19.200.7"},
                                                    {"X-Forwarded-For": f"198.51.100.{k + 1}"}))
            for label, got, limit in (("100 posts from one client", one_client, "client_per_hour 20, 60/min"),
                                      ("50 posts for one address", one_address, "address_per_day 5"),
                                      ("50 posts for one IP", one_ip, "ip_per_day 5")):
                print(f"burst: {label:<28} {got}  (limits: {limit})")
            figures["burst"] = {"one_client": one_client, "one_address": one_address, "one_ip": one_ip}
    finally:
        smtp.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
