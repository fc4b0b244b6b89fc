"""The sections of the configuration, one class each, validated by pydantic: a wrong value
names its key and what is wrong. `mailbot.config` assembles them into `Config`."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailbot.errors import ConfigurationError
from mailbot.extraction.findings import Kind
from mailbot.identity import person

Security = Literal["tls", "starttls", "none"]


class ConfigError(ConfigurationError):
    """The configuration cannot be used; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TlsClient(Section):
    """A client of a TLS server (the mailbox, the SMTP server)."""

    tls_verify: bool = True
    ca_file: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _read_secret(value: str | None, file: str | None, key: str) -> str | None:
    if value:
        return value
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{key}_file: cannot read {file}: {e.strerror}") from None
    return None


RECHECK_FLOOR = 0.05
"""The shortest mailbox.idle_recheck_seconds: below it the watcher would spend its time asking."""


class MailboxConfig(_TlsClient):
    source: Literal["imap", "maildir"] = "imap"
    host: str = ""
    port: int = Field(993, ge=1, le=65535)
    security: Security = "tls"
    user: str = ""
    auth: Literal["password", "oauth2"] = "password"
    password: str | None = Field(None, repr=False)
    password_file: str | None = None
    token_command: str | None = None
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    sent_folders: tuple[str, ...] = ()
    maildir_path: str = ""
    batch_size: int = Field(100, ge=1, le=5000)
    batch_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    process_batch: int = Field(50, ge=1, le=1000)
    idle: bool = True
    idle_seconds: float = Field(600.0, ge=10, le=1680)
    idle_recheck_seconds: float = Field(0.0, ge=0, le=300)
    timeout: float = Field(60.0, gt=0)
    max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _needs(self) -> MailboxConfig:
        if self.source == "imap":
            if not self.host:
                raise ValueError("host: required when source = \"imap\"")
            if not self.user:
                raise ValueError("user: required when source = \"imap\"")
        elif not self.maildir_path:
            raise ValueError("maildir_path: required when source = \"maildir\"")
        if 0 < self.idle_recheck_seconds < RECHECK_FLOOR:
            raise ValueError(f"idle_recheck_seconds: 0 (off) or at least {RECHECK_FLOOR}")
        if self.idle_recheck_seconds >= self.idle_seconds:
            raise ValueError(f"idle_recheck_seconds: must be below idle_seconds ({self.idle_seconds:g})")
        return self

    def secret(self) -> str | None:
        return _read_secret(self.password, self.password_file, "mailbox.password")


class OutgoingConfig(_TlsClient):
    transport: Literal["smtp", "maildir"] = "smtp"
    host: str = ""
    port: int = Field(587, ge=1, le=65535)
    security: Security = "starttls"
    user: str | None = None
    auth: Literal["password", "oauth2"] = "password"
    password: str | None = Field(None, repr=False)
    password_file: str | None = None
    token_command: str | None = None
    maildir_path: str = ""
    from_address: str = "delist@example.org"
    from_name: str = "Delist desk"
    timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(12, ge=1)
    retry_base_seconds: float = Field(60.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)

    @model_validator(mode="after")
    def _needs(self) -> OutgoingConfig:
        if self.transport == "smtp" and not self.host:
            raise ValueError("host: required when transport = \"smtp\"")
        if self.transport == "maildir" and not self.maildir_path:
            raise ValueError("maildir_path: required when transport = \"maildir\"")
        if "@" not in self.from_address:
            raise ValueError("from_address: must be an email address")
        return self

    def secret(self) -> str | None:
        return _read_secret(self.password, self.password_file, "outgoing.password")


class DatabaseConfig(Section):
    url: str = "sqlite:///mailbot.db"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return v


class DeskConfig(Section):
    name: str = "Delist desk"
    timezone: str = "UTC"
    own_addresses: tuple[str, ...] = ()
    staff: tuple[str, ...] = ()
    staff_senders: tuple[str, ...] = ()
    needs_info_days: float = Field(default=7, gt=0)
    """A request waiting for the sender's full notice is closed after this many days without a word."""

    def is_staff(self, address: str | None) -> bool:
        """Whether mail from `address` is a staff answer (an address, or a domain as "@example.org")."""
        if not address:
            return False
        who = person(address)
        domain = "@" + who.rpartition("@")[2]
        return any(s.lower() == domain if s.startswith("@") else person(s) == who
                   for s in (*self.staff_senders, *self.staff))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class RuleConfig(Section):
    """One policy rule: a rejection matches when it meets every criterion the rule gives."""

    name: str
    codes: tuple[str, ...] = ()
    """Enhanced status codes or ranges ("5.7.511", "5.7.606-5.7.649"); a family inferred from the
    provider's words alone (no code in the mail) matches too, unless `inferred` is false."""
    kinds: tuple[Kind, ...] = ()
    issuers: tuple[str, ...] = ()
    """Issuer names of the issuer table ("spamhaus", "gmail", ...)."""
    ours: bool | None = None
    """true: the issuer is this desk's provider; false: a known issuer that is not."""
    phrases: tuple[str, ...] = ()
    """Words of the rejection line (any of them, case-insensitive)."""
    inferred: bool = True
    action: Literal["ticket", "redirect", "needs_info", "not_ours", "not_a_block"]
    sla: bool = False

    @model_validator(mode="after")
    def _says_something(self) -> RuleConfig:
        if not (self.codes or self.kinds or self.issuers or self.ours is not None or self.phrases):
            raise ValueError(f"rule {self.name!r} matches everything: give codes, kinds, issuers, ours or phrases")
        return self


class PolicyConfig(Section):
    portal_url: str = "https://sender.office.com/"
    rules: tuple[RuleConfig, ...] | None = None
    non_delistable: tuple[str, ...] | None = None
    allow_ranges: tuple[str, ...] = ()


class SlaConfig(Section):
    hours: float = Field(48.0, gt=0)
    escalate_before: float = Field(8.0, ge=0)
    sweep_seconds: float = Field(300.0, gt=0)
    reopen_on_thanks: bool = False


class DigestConfig(Section):
    enabled: bool = True
    cron: str = "0 8 * * *"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"must be a 5-field crontab expression like \"0 8 * * *\", got {v!r}")
        return v


class RepliesConfig(Section):
    """Limits on automatic replies, and whose Authentication-Results to believe."""

    per_recipient_daily: int = Field(10, ge=0)
    per_domain_daily: int = Field(100, ge=0)
    breaker_per_hour: int = Field(500, ge=0)
    authserv_ids: tuple[str, ...] = ()
    trust_topmost: bool = False


class ScheduleConfig(Section):
    poll_seconds: float = Field(60.0, gt=0)
    flush_seconds: float = Field(15.0, gt=0)


class LogConfig(Section):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class MetricsConfig(Section):
    port: int = Field(0, ge=0, le=65535)
    address: str = "127.0.0.1"


class ExtractionConfig(Section):
    """What reading one message's NDR may cost; a message that costs more is quarantined."""

    seconds: float = Field(5.0, gt=0, le=600)
    memory_mb: int = Field(1024, ge=64, le=1024 * 1024)
    workers: int = Field(2, ge=1, le=64)
    """Worker processes reading mail side by side, each with its own `memory_mb`."""
    issuers_file: str | None = None
    """A TOML file of issuers merged into the shipped table (mailbot/extraction/issuers.toml's shape)."""


class AlertsConfig(Section):
    poll_failure_minutes: float = Field(30.0, gt=0)


class TemplatesConfig(Section):
    dir: str | None = None
    language: str = "en"

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        # a folder name under the templates dir: a language tag, never a path
        if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", v):
            raise ValueError(f"must be a language tag like \"en\" or \"de\", got {v!r}")
        return v


class AutodelistConfig(Section):
    """Automatic delisting of first listings (mailbot/staffing/autodelist.py). Off by default."""

    enabled: bool = False
    hold_minutes: float = Field(15.0, ge=0, le=7 * 24 * 60)
    categories: tuple[str, ...] = ()
    per_hour: int = Field(10, ge=0, le=100_000)
    per_day: int = Field(50, ge=0, le=1_000_000)


class ListingConfig(Section):
    """Where the desk looks IPs up and delists them (mailbot.listing). No source: no lookups at all."""

    source: Literal["table", "dnsbl", "http", "command"] | None = None
    cache_seconds: float = Field(60.0, ge=0, le=86400)
    repeat_days: float = Field(90.0, ge=0, le=3650)
    timeout_seconds: float = Field(5.0, gt=0, le=300)
    lookup_attempts: int = Field(2, ge=1, le=10)
    delist_attempts: int = Field(5, ge=1, le=20)
    retry_base_seconds: float = Field(1.0, ge=0, le=600)
    retry_max_seconds: float = Field(30.0, ge=0, le=3600)
    dnsbl_zone: str = ""
    dnsbl_nameserver: str = ""
    dnsbl_port: int = Field(53, ge=1, le=65535)
    http_url: str = ""
    token_file: str | None = None
    command: tuple[str, ...] = ()
    answer_not_listed: bool = True
    """A forward for an IP the source does not list is answered so, and resolved (`not_listed`)."""
    recheck_per_sweep: int = Field(50, ge=0, le=10_000)
    """Open tickets the SLA sweep looks up afresh each time (the longest unchecked first)."""

    @model_validator(mode="before")
    @classmethod
    def _no_token_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise ValueError("token: never in the TOML; put it in a file named by token_file, "
                             "or in the environment as MAILBOT_LISTING_TOKEN")
        return data

    @model_validator(mode="after")
    def _needs(self) -> ListingConfig:
        if self.source == "dnsbl":
            if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                                r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?", self.dnsbl_zone):
                raise ValueError("dnsbl_zone: required when source = \"dnsbl\": the list's zone, "
                                 f"like \"bl.example.org\" (got {self.dnsbl_zone!r})")
            if self.dnsbl_nameserver:
                try:
                    ipaddress.ip_address(self.dnsbl_nameserver)
                except ValueError:
                    raise ValueError(f"dnsbl_nameserver: must be an IP address, got {self.dnsbl_nameserver!r}") \
                        from None
        if self.source == "http" and not re.match(r"https?://[^/\s]+", self.http_url):
            raise ValueError("http_url: required when source = \"http\": the service's base URL, like "
                             f"\"https://list.example.org/api\" (got {self.http_url!r})")
        if self.source == "command" and not self.command:
            raise ValueError("command: required when source = \"command\": the program and its arguments, "
                             "like [\"/usr/local/bin/list-client\", \"--json\"]")
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds: must not be less than retry_base_seconds")
        return self

    def token(self, environ: dict[str, str] | None = None, base: Path | None = None) -> str | None:
        """The bearer token of the http source: MAILBOT_LISTING_TOKEN, else the token file's content."""
        env = os.environ if environ is None else environ
        if env.get("MAILBOT_LISTING_TOKEN"):
            return env["MAILBOT_LISTING_TOKEN"].strip()
        if not self.token_file:
            return None
        path = Path(self.token_file).expanduser()
        return _read_secret(None, str(base / path if base and not path.is_absolute() else path), "listing.token")
