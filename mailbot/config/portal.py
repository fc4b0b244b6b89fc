"""`[portal]`: the self-service delist portal (`mailbot portal`, issue #19).

The signing key is never in the TOML: `secret_file` names a file holding it, or the
environment gives it as MAILBOT_PORTAL_SECRET (the file's path as MAILBOT_PORTAL_SECRET_FILE).
A key shorter than `MIN_SECRET` characters is refused: the links it signs delist IPs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MIN_SECRET = 32
SECRET_ENV = "MAILBOT_PORTAL_SECRET"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


class PortalSecretError(ValueError):
    """The signing key cannot be had: the message says where it was looked for."""


class PortalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = ""
    """The portal's public URL (https://delist.example.org/). Set: the portal is on, its links in
    mail start here and the `redirect` mail points senders at it. Unset: `mailbot portal` still
    runs, with links to the address it listens on (the demo, on loopback)."""
    secret_file: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=1, le=65535)
    categories: tuple[str, ...] | None = None
    """Listing categories the portal may delist: names ("spam") or status codes and ranges
    ("5.7.606-5.7.649") matched against a category that is a code. Unset: the codes of the
    policy's redirect rules (by default 5.7.606-5.7.649)."""
    link_hours: float = Field(24.0, gt=0, le=24 * 14)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    """Peers whose X-Forwarded-For is believed (the reverse proxy); nobody else's."""
    client_per_hour: int = Field(20, ge=1)
    address_per_day: int = Field(5, ge=1)
    ip_per_day: int = Field(5, ge=1)
    network_per_day: int = Field(20, ge=1)
    network_v4: int = Field(24, ge=8, le=32)
    network_v6: int = Field(48, ge=16, le=128)
    client_v6: int = Field(64, ge=32, le=128)
    """An IPv6 client is counted by its /64 (one host can hold a whole /64)."""
    requests_per_minute: int = Field(60, ge=1)
    """Any request of one client address, pages and presses alike: a flood stops here, before the database."""
    metrics_port: int = Field(0, ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _no_secret_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "secret" in data:
            raise ValueError("secret: never in the TOML; put it in a file named by secret_file, "
                             f"or in the environment as {SECRET_ENV}")
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment \
                or parts.username or parts.password:
            raise ValueError(f"must be the portal's public URL like \"https://delist.example.org/\", got {v!r}")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"must be https (the links it signs delist IPs), except on loopback; got {v!r}")
        return v if v.endswith("/") else v + "/"

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise ValueError(f"must be IP addresses or networks, got {p!r}") from None
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and any(not c.strip() or len(c) > 100 or not c.isprintable() for c in v):
            raise ValueError("must be names or codes of at most 100 printable characters")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def base_url(self, host: str, port: int) -> str:
        """Where links point: `url`, else the address the server listens on (never a request's Host header)."""
        if self.url:
            return self.url
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def secret(self, environ: Mapping[str, str] | None = None, base: Path | None = None) -> bytes:
        """The signing key: MAILBOT_PORTAL_SECRET, else the content of `secret_file`."""
        env = os.environ if environ is None else environ
        value = env.get(SECRET_ENV, "").strip()
        where = SECRET_ENV
        if not value:
            if not self.secret_file:
                raise PortalSecretError(f"no signing key: set portal.secret_file, or {SECRET_ENV} in the environment")
            path = Path(self.secret_file).expanduser()
            path = base / path if base is not None and not path.is_absolute() else path
            where = str(path)
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise PortalSecretError(f"portal.secret_file: cannot read {path}: {e.strerror}") from None
        if len(value) < MIN_SECRET or re.search(r"\s", value):
            raise PortalSecretError(f"the signing key in {where} must be at least {MIN_SECRET} characters without "
                                    "blanks (e.g. `openssl rand -base64 48`)")
        return value.encode()
