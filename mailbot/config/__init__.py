"""Configuration: one TOML file, validated into typed sections.

`load(path)` returns a `Config` or raises `ConfigError` whose message names
the key and what is wrong with it (never a traceback for the operator).
Every key is documented in `config.example.toml`; a test checks that.

Any key can be overridden from the environment as `MAILBOT_<SECTION>_<KEY>`
(e.g. `MAILBOT_MAILBOX_PASSWORD`), and `MAILBOT_<SECTION>_<KEY>_FILE` reads
the value from a file, so secrets never need to be in the TOML.

Contract: each part reads its own section (`config.mailbox`, `config.policy`, ...);
`sections` defines them, this module assembles, loads and overrides them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from mailbot.config.portal import PortalConfig
from mailbot.config.sections import (
    AlertsConfig,
    AutodelistConfig,
    ConfigError,
    DatabaseConfig,
    DeskConfig,
    DigestConfig,
    ExtractionConfig,
    ListingConfig,
    LogConfig,
    MailboxConfig,
    MetricsConfig,
    OutgoingConfig,
    PolicyConfig,
    RepliesConfig,
    RuleConfig,
    ScheduleConfig,
    Section,
    Security,
    SlaConfig,
    TemplatesConfig,
)

__all__ = [
    "SECTIONS",
    "AlertsConfig",
    "AutodelistConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DeskConfig",
    "DigestConfig",
    "ExtractionConfig",
    "ListingConfig",
    "LogConfig",
    "MailboxConfig",
    "MetricsConfig",
    "OutgoingConfig",
    "PolicyConfig",
    "PortalConfig",
    "RepliesConfig",
    "RuleConfig",
    "ScheduleConfig",
    "Section",
    "Security",
    "SlaConfig",
    "TemplatesConfig",
    "database_url",
    "load",
    "parse",
]


class Config(Section):
    mailbox: MailboxConfig
    outgoing: OutgoingConfig
    database: DatabaseConfig = DatabaseConfig()
    desk: DeskConfig = DeskConfig()
    policy: PolicyConfig = PolicyConfig()
    sla: SlaConfig = SlaConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    replies: RepliesConfig = RepliesConfig()
    digest: DigestConfig = DigestConfig()
    templates: TemplatesConfig = TemplatesConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    extraction: ExtractionConfig = ExtractionConfig()
    listing: ListingConfig = ListingConfig()
    autodelist: AutodelistConfig = AutodelistConfig()
    portal: PortalConfig = PortalConfig()
    base_dir: str = Field(".", exclude=True)
    """Directory of the config file; relative paths in it are taken from there."""

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q

    @property
    def own_addresses(self) -> frozenset[str]:
        own = {a.lower() for a in self.desk.own_addresses}
        own.add(self.outgoing.from_address.lower())
        return frozenset(own)


SECTIONS = ("mailbox", "outgoing", "database", "desk", "policy", "sla", "schedule", "digest", "replies", "templates",
            "log", "metrics", "alerts", "extraction", "listing", "autodelist", "portal")


def _env_overrides(data: dict[str, Any], environ: dict[str, str]) -> None:
    """Apply MAILBOT_<SECTION>_<KEY>[_FILE] on top of the file's values."""
    for section in SECTIONS:
        model = Config.model_fields[section].annotation
        fields = getattr(model, "model_fields", {})
        for key in fields:
            env = f"MAILBOT_{section.upper()}_{key.upper()}"
            value: str | None = environ.get(env)
            if value is None and env + "_FILE" in environ:
                try:
                    value = Path(environ[env + "_FILE"]).read_text(encoding="utf-8").strip()
                except OSError as e:
                    raise ConfigError(f"{env}_FILE: cannot read {environ[env + '_FILE']}: {e.strerror}") from None
            if value is not None:
                data.setdefault(section, {})[key] = _coerce_env(value, fields[key].annotation)


def _coerce_env(value: str, annotation: object) -> object:
    if "tuple" in str(annotation):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (is it misspelt, or in the wrong [section]?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
            # validators of a whole section name the key inside the message
            if ": " in msg and " " not in msg.split(": ", 1)[0]:
                key, msg = msg.split(": ", 1)
                loc = f"{loc}.{key}" if loc else key
        elif "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def parse(data: dict[str, Any], base_dir: str = ".", environ: dict[str, str] | None = None) -> Config:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    _env_overrides(data, dict(os.environ) if environ is None else environ)
    try:
        return Config(**data, base_dir=base_dir)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def load(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found (write one with `mailbot init`; "
                          "`mailbot init --example` shows every key)") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return parse(data, base_dir=str(p.resolve().parent), environ=environ)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def database_url(config: Config) -> str:
    """The database URL with a relative SQLite path taken from the config's directory."""
    url = config.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(config.path(url.removeprefix(prefix)))
    return url
