"""What `mailbot check` says of the portal: one (level, line) per finding, never the key itself.

Off (no `[portal] url`): nothing. On: the URL, the signing key (from the
environment or its file, long enough, the file not readable by others), a listing source that
can delist, the categories it may delist, the trusted proxies, and every page in every
language rendered with sample data (an operator's override that breaks shows here, not when
the first sender arrives).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from mailbot.config import Config
from mailbot.config.portal import SECRET_ENV, PortalSecretError

Level = Literal["ok", "warn", "FAIL"]
SAMPLE = {"ip": "203.0.113.45", "ref": "DL-000123", "token": "", "problems": ["ip"], "minutes": 5,
          "retry_after": 300, "outcome": "delisted", "used": False, "state": "expired", "problem": "csrf",
          "desk_name": "Example Delist Desk", "delist_address": "delist@example.org", "csrf": "x",
          "link_hours": "24", "categories_hint": "5.7.606–5.7.649"}


def portal_checks(config: Config, environ: Mapping[str, str] | None = None) -> list[tuple[Level, str]]:
    pc = config.portal
    if not pc.enabled:
        return []  # off: nothing to check, and the check's lines stay those of a desk without it
    env = os.environ if environ is None else environ
    found: list[tuple[Level, str]] = [("ok", f"url {pc.url}" + (" (http: loopback only)" if pc.url.startswith(
        "http:") else ""))]
    found.append(_key(config, env))
    source = config.listing.source
    if source is None:
        found.append(("FAIL", "[listing] source is not set: the portal has no list to look IPs up in"))
    elif source == "dnsbl":
        found.append(("FAIL", "[listing] source is \"dnsbl\": a DNS zone cannot be delisted through, so every press "
                              "would fail"))
    else:
        from mailbot.portal.service import portal_categories

        cats = portal_categories(config)
        found.append(("ok" if cats else "FAIL", f"delists listings of {source} in categories {', '.join(cats)}"
                      if cats else "no categories: set [portal] categories, or a redirect rule with codes"))
    if any(ipaddress.ip_network(p, strict=False).prefixlen == 0 for p in pc.trusted_proxies):
        found.append(("warn", "portal.trusted_proxies holds a whole address family: every client can name "
                              "itself in X-Forwarded-For and escape the per-client limit"))
    found.append(_pages(config))
    return found


def _key(config: Config, env: Mapping[str, str]) -> tuple[Level, str]:
    pc = config.portal
    try:
        pc.secret(env, base=Path(config.base_dir))
    except PortalSecretError as e:
        return "FAIL", str(e)
    if env.get(SECRET_ENV, "").strip():
        return "ok", f"signing key from {SECRET_ENV}"
    path = config.path(pc.secret_file or "")
    if path.stat().st_mode & 0o077:
        return "warn", f"signing key file {path} can be read by others than its owner: chmod 600"
    return "ok", f"signing key from {path}"


def _pages(config: Config) -> tuple[Level, str]:
    import jinja2

    from mailbot.portal.pages import PAGES, Pages
    from mailbot.portal.service import LANGUAGES

    t = config.templates
    try:
        pages = Pages(config.path(t.dir) if t.dir else None, LANGUAGES)
        for lang in LANGUAGES:
            for name in PAGES:
                pages.render(lang, name, dict(SAMPLE))
    except (jinja2.TemplateError, OSError) as e:
        return "FAIL", f"portal page: {type(e).__name__}: {e}"
    return "ok", f"pages {', '.join(PAGES)} in {', '.join(LANGUAGES)}"
