"""The portal for operators (issue #19): `mailbot check` covers it, the key stays out of the TOML,
`mailbot portal` refuses to start without what it needs, its logs are JSON without tokens,
its metrics count, and the desk's redirect mail points at it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from app import DOC_RANGES, mailbot_cli, sample, write_config
from portal_app import SECRET, PortalWorld
from prometheus_client import generate_latest

from mailbot.portal.metrics import REGISTRY
from mailbot.store.states import MailKind

IP = "203.0.113.45"


def offline(tmp_path: Path, **extra: dict[str, Any]) -> Path:
    """A desk that needs no server to be checked: Maildir in and out, SQLite."""
    sections: dict[str, dict[str, Any]] = {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "maildir", "maildir_path": "outbox"},
        "database": {"url": "sqlite:///mailbot.db"},
        "desk": {"staff": ["support@example.org"]}, "replies": {"authserv_ids": ["mx.example.org"]},
        "listing": {"source": "table"},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return write_config(tmp_path / "mailbot.toml", sections)


def check(path: Path, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    r = mailbot_cli("-c", str(path), "check", env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, [ln for ln in r.stdout.splitlines() if ln.split()[1:2] == ["portal"]], r.stdout + r.stderr


def test_check_covers_the_portal_url_key_source_and_pages(tmp_path: Path) -> None:
    code, lines, _ = check(offline(tmp_path))
    assert code == 0 and lines == []  # off: the check is what it was without the portal

    key = tmp_path / "portal-key"
    key.write_text(SECRET + "\n")
    key.chmod(0o600)
    path = offline(tmp_path, portal={"url": "https://delist.example.org/", "secret_file": "portal-key"})
    code, lines, out = check(path)
    assert code == 0, out
    assert [ln.split()[0] for ln in lines] == ["ok"] * 4
    assert "url https://delist.example.org/" in lines[0] and f"signing key from {key}" in lines[1]
    assert "categories 5.7.606-5.7.649" in lines[2] and "pages form, sent" in lines[3]
    assert SECRET not in out

    key.chmod(0o644)
    assert "can be read by others" in check(path)[1][1]
    key.write_text("short\n")
    code, lines, out = check(path)
    assert code == 1 and "at least 32 characters" in lines[1] and "short" not in out
    code, lines, _ = check(path, env={"MAILBOT_PORTAL_SECRET": SECRET})
    assert code == 0 and "signing key from MAILBOT_PORTAL_SECRET" in lines[1]

    no_source = offline(tmp_path, portal={"url": "https://delist.example.org/", "secret_file": "portal-key"},
                        listing={"source": "dnsbl", "dnsbl_zone": "bl.example.org"})
    code, lines, _ = check(no_source, env={"MAILBOT_PORTAL_SECRET": SECRET})
    assert code == 1 and any("cannot be delisted through" in ln for ln in lines)


def test_a_broken_page_override_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "tpl" / "portal").mkdir(parents=True)
    (tmp_path / "tpl" / "portal" / "sent.html.j2").write_text("{{ nonsuch }}")
    path = offline(tmp_path, portal={"url": "https://delist.example.org/"}, templates={"dir": "tpl"})
    code, lines, _ = check(path, env={"MAILBOT_PORTAL_SECRET": SECRET})
    assert code == 1 and lines[-1].startswith("FAIL") and "nonsuch" in lines[-1]


def test_the_key_is_never_in_the_toml_and_the_portal_will_not_start_without_key_or_source(tmp_path: Path) -> None:
    path = offline(tmp_path, portal={"secret": SECRET})
    r = mailbot_cli("-c", str(path), "check")
    assert r.returncode == 1 and "portal.secret: never in the TOML" in r.stdout and SECRET not in r.stdout
    r = mailbot_cli("-c", str(path), "portal", "--port", "1")
    assert r.returncode == 2 and "portal.secret: never in the TOML" in r.stderr and SECRET not in r.stderr
    r = mailbot_cli("-c", str(offline(tmp_path)), "portal", "--port", "1")
    assert r.returncode == 2 and "no signing key" in r.stderr
    path = offline(tmp_path)
    path.write_text(path.read_text().replace('source = "table"', ""))
    r = mailbot_cli("-c", str(path), "portal", "--port", "1", env={"MAILBOT_PORTAL_SECRET": SECRET})
    assert r.returncode == 2 and "[listing] source is not set" in r.stderr


def test_the_portal_logs_json_lines_without_the_links_token(
        make_portal: Callable[..., PortalWorld], mailbot_portal: Callable[..., tuple[str, Path]],
        smtp_server: Any, tmp_path: Path) -> None:
    world = make_portal()
    world.list_ip(f"{IP}/32")
    base, _path = mailbot_portal(log={"format": "json"})
    with httpx.Client(base_url=base) as c:
        form = c.get("/")
        csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
        assert c.post("/", data={"csrf": csrf, "address": "a@example.org", "ip": IP}).status_code == 303
        link = world.links()[0]
        assert c.get(link).status_code == 200
    token = link.rsplit("/", 1)[1]
    smtp_server.wait_for(1, timeout=20)  # the sender thread mailed the link at once
    deadline = time.monotonic() + 10  # the access line is written after the answer has left
    while "/confirm/" not in (log := (tmp_path / "portal.log").read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(r["msg"].startswith("GET /confirm/… 200") for r in records)
    assert token not in log and token.split(".")[1] not in log


def test_the_counters_count_requests_mails_confirmations_delists_and_refusals(portal_world: PortalWorld) -> None:
    def value(name: str) -> float:
        samples = dict(line.rsplit(" ", 1) for line in generate_latest(REGISTRY).decode().splitlines()
                       if line and not line.startswith("#"))
        return float(samples.get(name, 0.0))

    names = ['mailbot_portal_links_mailed_total', 'mailbot_portal_confirmations_total',
             'mailbot_portal_delists_total{outcome="delisted"}',
             'mailbot_portal_refusals_total{reason="not_in_portal_category"}',
             'mailbot_portal_refusals_total{reason="csrf"}', 'mailbot_portal_requests_total{page="form",status="200"}']
    before = {n: value(n) for n in names}
    portal_world.list_ip(f"{IP}/32")
    b = portal_world.browser()
    b.ask("a@example.org", IP)
    b.ask("a@example.org", "203.0.113.9")
    b.post("/", data={"csrf": "x", "address": "a@example.org", "ip": IP})
    b.press(portal_world.links()[0])
    after = {n: value(n) for n in names}
    assert {n: after[n] - before[n] for n in names} == {names[0]: 1, names[1]: 1, names[2]: 1, names[3]: 1,
                                                         names[4]: 1, names[5]: 2}


def test_the_redirect_mail_points_at_the_portal_when_it_is_on(make_world: Callable[..., Any]) -> None:
    world = make_world(portal={"url": "https://delist.example.org/"}, policy={"allow_ranges": DOC_RANGES})
    world.deliver(sample("02-portal-outlook-inline.eml"))
    world.run()
    [mail] = [m for m in world.outbox() if m.kind == MailKind.REDIRECT]
    body = email.message_from_bytes(mail.raw, policy=email.policy.default).get_body(("plain",))
    assert body is not None
    assert "self-service delist portal:\n\n  https://delist.example.org/\n" in body.get_content().replace("\r\n", "\n")


def test_the_shipped_unit_runs_the_portal_hardened_with_its_key_as_a_credential() -> None:
    unit = Path(__file__).resolve().parents[1] / "deploy" / "mailbot-portal.service"
    pairs = [ln.split("=", 1) for ln in unit.read_text().splitlines()
             if ln.strip() and not ln.startswith(("#", "[")) and "=" in ln]
    s = {k.strip(): v.strip() for k, v in pairs}
    assert s["ExecStart"].split()[-1] == "portal" and s["User"] != "root" and s["Restart"] == "on-failure"
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict"
    env = dict(v.split("=", 1) for k, v in pairs if k == "Environment")
    assert env == {"MAILBOT_PORTAL_SECRET_FILE": "%d/portal-key", "MAILBOT_OUTGOING_PASSWORD_FILE": "%d/smtp-password"}
    r = subprocess.run([sys.executable, "-m", "mailbot", *s["ExecStart"].split()[1:], "--help"], capture_output=True,
                       text=True, timeout=60, env={**os.environ})
    assert r.returncode == 0 and "self-service delist portal" in r.stdout


def test_the_demos_config_runs_the_portal_as_it_is(tmp_path: Path) -> None:
    """`mailbot demo` writes the key file and lists the IP it sent to the portal; `mailbot portal`
    on that config serves the form on loopback and mails the link into the demo's outbox."""
    from portal_app import wait_port
    from servers import free_port

    demo = tmp_path / "demo"
    r = mailbot_cli("demo", "--dir", str(demo))
    assert r.returncode == 0 and "portal   then open http://127.0.0.1:8025/ and delist 198.51.100.23" in r.stdout
    assert (demo / "portal-key").stat().st_mode & 0o077 == 0
    port = free_port()
    log = tmp_path / "portal.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(demo / "mailbot.toml"), "portal",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_port(port, proc, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            csrf = c.get("/").text.split('name="csrf" value="')[1].split('"')[0]
            r2 = c.post("/", data={"csrf": csrf, "address": "ops@example.org", "ip": "198.51.100.23"})
            assert r2.status_code == 303
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                b"Confirm: delist 198.51.100.23" in f.read_bytes() for f in (demo / "outbox" / "new").iterdir()):
            time.sleep(0.2)
        assert any(b"Confirm: delist 198.51.100.23" in f.read_bytes() for f in (demo / "outbox" / "new").iterdir())
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_key_file_can_come_from_the_environment_as_systemd_hands_it_over(tmp_path: Path) -> None:
    from mailbot.config import parse

    key = tmp_path / "portal-key"
    key.write_text(SECRET + "\n")
    config = parse({"mailbox": {"host": "imap.example.org", "user": "u"}, "outgoing": {"host": "smtp.example.org"}},
                   environ={"MAILBOT_PORTAL_SECRET_FILE": str(key)})
    assert config.portal.secret_file == str(key)
    assert config.portal.secret({}) == SECRET.encode()
    assert SECRET not in repr(config)
