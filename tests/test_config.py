"""Configuration: one TOML file; a wrong key gets one line naming it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailbot.config import ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {
    "mailbox": {"host": "imap.example.org", "user": "delist@example.org"},
    "outgoing": {"host": "smtp.example.org"},
}


def test_the_example_config_loads_and_its_values_are_the_defaults() -> None:
    config = load(ROOT / "config.example.toml", environ={})
    assert config.mailbox.port == 993 and config.sla.hours == 48.0
    assert config.outgoing.from_address == "delist@example.org"
    defaults = parse(MINIMAL, environ={})
    for section in ("mailbox", "outgoing", "database", "desk", "policy", "sla", "schedule", "templates",
                    "extraction"):
        ours = getattr(config, section).model_dump()
        theirs = getattr(defaults, section).model_dump()
        assert {k: v for k, v in ours.items() if k not in ("host", "user")} == \
               {k: v for k, v in theirs.items() if k not in ("host", "user")}, section


def test_the_example_documents_every_setting() -> None:
    text = (ROOT / "config.example.toml").read_text()
    from mailbot.config import SECTIONS, Config, RuleConfig

    for section in SECTIONS:
        assert f"[{section}]" in text
        model = Config.model_fields[section].annotation
        for key in model.model_fields:  # type: ignore[union-attr]
            documented = f"\n{key} =" in text or f"\n# {key} =" in text or f"[[{section}.{key}]]" in text
            assert documented, f"{section}.{key} is not documented"
    for key in RuleConfig.model_fields:
        assert f"# {key} =" in text, f"policy.rules.{key} is not documented"


@pytest.mark.parametrize(("data", "message"), [
    ({"mailbox": {"host": "h", "user": "u", "port": "abc"}, "outgoing": {"host": "s"}}, "mailbox.port: "),
    ({"mailbox": {"host": "h", "user": "u", "prot": 1}, "outgoing": {"host": "s"}}, "mailbox.prot: unknown key"),
    ({"mailbox": {"user": "u"}, "outgoing": {"host": "s"}}, "mailbox.host: required when source = \"imap\""),
    ({"mailbox": {"host": "h", "user": "u"}}, "outgoing: required key is missing"),
    ({**MINIMAL, "desk": {"timezone": "Mars/Olympus"}}, "desk.timezone: unknown time zone 'Mars/Olympus'"),
    ({**MINIMAL, "database": {"url": "mysql://x"}}, "database.url: "),
    ({"mailbox": {"source": "pop3"}, "outgoing": {"host": "s"}}, "mailbox.source: "),
])
def test_a_wrong_or_missing_key_is_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(data, environ={})
    assert message in str(e.value)


def test_environment_overrides_and_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = parse(MINIMAL, environ={"MAILBOT_MAILBOX_PORT": "143", "MAILBOT_MAILBOX_PASSWORD_FILE": str(secret),
                                     "MAILBOT_DESK_STAFF": "a@example.org, b@example.org"})
    assert config.mailbox.port == 143
    assert config.mailbox.secret() == "s3cret"
    assert config.desk.staff == ("a@example.org", "b@example.org")


def test_the_password_never_shows_in_the_config_repr() -> None:
    config = parse({**MINIMAL, "mailbox": {**MINIMAL["mailbox"], "password": "hunter2"}}, environ={})
    assert "hunter2" not in repr(config)


def test_the_command_line_says_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "mailbot.toml"
    data = tomllib.loads((ROOT / "config.example.toml").read_text())
    bad.write_text((ROOT / "config.example.toml").read_text().replace("port = 993", 'port = "nine"'))
    assert data["mailbox"]["port"] == 993
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(bad), "tickets"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "mailbox.port" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(tmp_path / "missing.toml"), "tickets"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not found" in r.stderr
