"""Outgoing mail, rendered from Jinja2 templates into exact bytes.

Each template NAME has `NAME.txt.j2` (blocks `subject` and `body`; the
line-layout filters of `plaintext` wrap its text) and `NAME.html.j2` (the
HTML alternative, autoescaped). Operators override any
of them from `[templates] dir`; the shipped ones are the fallback.

Templates are per language (`[templates] language`): every file, includes
and layouts too, is looked up in `<dir>/<language>/` before `<dir>/`, first
in the override folder, then in the shipped templates. The files at the top
of a folder are the default language, English for the shipped ones.

Headers built from inbound values go through `sanitize` first; the
Message-ID is fixed here, at render time, so a resend is recognisably the
same mail.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

import jinja2

from mailbot import PACKAGE_DIR
from mailbot.errors import CommandFailed
from mailbot.outgoing import plaintext, sanitize, wire

PACKAGED = PACKAGE_DIR / "templates"
SOURCE_TREE = PACKAGE_DIR.parent / "templates"


_SAMPLE_TICKET = {
    "ref": "DL-000123", "sender": "erik.admin@contoso-sender.example", "ip": "203.0.113.45",
    "full_code": "550 5.7.511", "code": "550 5.7.511", "state": "open",
    "text": "550 5.7.511 Access denied, banned sender[203.0.113.45]. To request removal from this list ...",
    "subject": "FW: Undelivered Mail Returned to Sender", "due_local": "2026-11-30 10:00 CET",
    "due_utc": "2026-11-30 09:00 UTC",
    "opened_local": "2026-11-28 10:00 CET", "time_left": "5h 12m left", "reason": "",
    "original": "Hello,\nour mail to your customers is rejected since this morning.\nErik",
    "bar": {"used": 89, "colour": "#bf8700", "ascii": "[##################..]"},
    # what the listing source said (staff mail only; the reason never goes to a sender)
    "listing": "listed since 2026-11-27 08:00 CET (spam-trap); listed 1 time before, last delisted "
               "2026-10-02 11:00 CEST; REPEAT (checked 2026-11-28 10:00 CET)",
    "listing_reason": "hit our spam traps 40 times on 2026-11-27", "repeat": True, "flag": "REPEAT",
}

SAMPLE_CONTEXT: dict[str, Any] = {
    **_SAMPLE_TICKET, "rejection_text": _SAMPLE_TICKET["text"], "desk_name": "Example Delist Desk",
    "portal_url": "https://sender.office.com/", "missing": ["the IP address named in the rejection line"],
    "joined": False, "original_subject": "FW: Undelivered Mail Returned to Sender", "note": "",
    # what a rejection is and whose (not_ours, not_a_block; ack and redirect when inferred)
    "inferred": None, "rejection_kind": "recipient_unknown", "issuer": "spamhaus", "issuer_label": "Spamhaus",
    "removal": "https://check.spamhaus.org/", "via": None,
    # staff commands by mail (sla_notice) and their confirmation (staff_confirmation)
    "by_assignee": [{"who": "bo@example.org", "tickets": [{"ref": "DL-000123", "note": "called them"}]},
                    {"who": "nobody", "tickets": [{"ref": "DL-000124", "note": ""}]}],
    "autodelisted": [{"ref": "DL-000120", "ip": "203.0.113.9", "category": "compromised",
                      "at_local": "2026-11-29 10:15 CET"}],
    "commands": "#close [why] | #answered [note] | #note <text> | #assign <me|address>",
    "results": ["#note: note kept on the ticket (staff only)", "#close: DL-000123 closed"],
    "hours": 48, "now_local": "2026-11-30 02:00 CET", "since_local": "2026-11-29 08:00 CET",
    "escalations": [_SAMPLE_TICKET], "breaches": [], "width": 760, "more_escalations": 0, "more_breaches": 0,
    "by_state": {"open": 1, "needs_info": 0, "answered": 0, "redirected": 0, "closed": 0},
    "families": {"5.7.511": 1}, "open": [_SAMPLE_TICKET], "breached": [], "escalated": [_SAMPLE_TICKET],
    "new": [_SAMPLE_TICKET], "answered": [], "redirected": [], "needs_info": [], "quarantined": [],
    "repeat_ips": [], "repeat_senders": [], "open_total": 1, "breached_total": 0, "escalated_total": 1,
    "list_cap": 500, "kind": "failing", "daemon": "mx1:4242",
    "mailbox": "delist@example.org@imap.example.org:993/INBOX",
    "error": "IMAP server imap.example.org:993 (user delist@example.org): login refused", "minutes": 30,
    "database": "SQLite /var/lib/mailbot/mailbot.db", "folder": "Sent",
    # the outgoing-server alert (send_alert) and the digest's failed outgoing mail
    "server": "smtp.example.org:587", "duration": "2h 5m", "held": 12, "tries": 9,
    "failed_mail": [], "failed_total": 0, "attention_total": 1,
    "attention": [{"ref": "DL-000122", "what": "the sender wrote to the closed ticket", "who": "erik@contoso.example",
                   "at_local": "2026-11-29 17:10 CET"}], "new_total": 1, "answered_total": 0, "redirected_total": 0,
    "needs_info_total": 0, "quarantined_total": 0, "open_states": ["open"], "expired_total": 0, "needs_info_days": 7,
    # the not_listed reply (when the IP was delisted before), and the digest's outcomes
    "delisted_local": "2026-11-29 16:20 CET",
    "outcomes": {"delisted": 3, "conditional": 1, "declined": 1, "not_listed": 4, "redirected": 2, "not_ours": 1},
    "outcomes_total": 12, "repeats": [_SAMPLE_TICKET], "repeats_total": 1,
    # the self-service portal's mails (portal_confirm, portal_result)
    "link": "https://delist.example.org/confirm/17.Xo3kq0xT2bYwq1mN8sVd4rLp.1795950000."
            "oW3hY2cC7m1QK9n0sZr5Tq8vXb4LfGd6JpAe2uNiMkE",
    "expires_local": "2026-12-01 10:00 CET", "link_hours": "24", "outcome": "delisted",
    "delist_address": "delist@example.org",
}
"""Data every shipped template renders with, for `mailbot check` and previews."""


class TemplateError(CommandFailed):
    """A template is missing or does not render; names the template."""


AUTOMATIC_TEMPLATES = frozenset({"ack", "needs_info", "redirect", "closed", "not_ours", "not_a_block", "not_listed",
                                 "sla_notice", "digest", "poll_alert", "database_alert", "folder_alert", "send_alert",
                                 "staff_confirmation", "portal_confirm", "portal_result"})
"""The mails mailbot writes by itself, each filled with data of its own; never a staff reply.
Every other template (the shipped `delisted`, `conditional` and `declined`, and any an operator
adds) is one."""

DEFAULT_LANGUAGE = "en"
"""The language of the files at the top of the shipped templates folder."""


def template_dirs(override: Path | None, language: str = DEFAULT_LANGUAGE) -> list[Path]:
    """The folders searched, first match wins: per folder, its language subfolder first."""
    dirs: list[Path] = []
    for base in (override, PACKAGED, SOURCE_TREE):
        if base is None or not base.is_dir():
            continue
        for d in (base / language, base):
            if d.is_dir() and d not in dirs:
                dirs.append(d)
    return dirs


def _is_template_name(name: str) -> bool:
    return not name.startswith("_") and "/" not in name


class Renderer:
    def __init__(self, override: Path | None = None, language: str = DEFAULT_LANGUAGE) -> None:
        self.override = override if override is not None and override.is_dir() else None
        self.language = language
        dirs = template_dirs(override, language)
        if not dirs:
            raise TemplateError("no templates directory found (set [templates] dir)")
        self.dirs = dirs
        loader = jinja2.FileSystemLoader([str(d) for d in dirs])
        # finalize: every value a text mail prints is made printable (a subject or display name
        # from mail must not carry terminal escapes into the digest a person reads in a terminal)
        self.text_env = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                                           keep_trailing_newline=True, finalize=sanitize.printable)
        self.text_env.filters.update(plaintext.FILTERS)
        self.html_env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)

    def keep_compiled(self) -> None:
        """Read each template once and keep it compiled (the daemon): otherwise jinja2 looks at
        the time of every template file at each use (`auto_reload`), a file system call per
        template per mail. An edited template then takes effect when the daemon is restarted."""
        self.text_env.auto_reload = False
        self.html_env.auto_reload = False

    def names(self) -> list[str]:
        return sorted({n.removesuffix(".txt.j2") for n in self.text_env.list_templates()
                       if n.endswith(".txt.j2") and _is_template_name(n)})

    def staff_templates(self) -> list[str]:
        """The templates staff may send with `mailbot reply`: every template but mailbot's automatic mail."""
        return [n for n in self.names() if n not in AUTOMATIC_TEMPLATES]

    def source(self, name: str, kind: str = "txt") -> Path | None:
        """The file that `render` uses for template `name` (kind "txt" or "html"), or None."""
        for d in self.dirs:
            p = d / f"{name}.{kind}.j2"
            if p.is_file():
                return p
        return None

    def language_used(self, name: str) -> str:
        """The language `render` uses for template `name`: the configured one, or the default as fallback."""
        src = self.source(name, "txt")
        if src is not None and src.parent.name == self.language \
                and src.parent.parent in (self.override, PACKAGED, SOURCE_TREE):
            return self.language
        return DEFAULT_LANGUAGE

    def overridden(self, name: str) -> bool:
        """Whether the override folder supplies either file of template `name`."""
        if self.override is None:
            return False
        return any(p is not None and p.is_relative_to(self.override)
                   for p in (self.source(name, "txt"), self.source(name, "html")))

    def languages(self, name: str) -> list[str]:
        """The languages template `name` exists in, in any folder (the default language first)."""
        found = {DEFAULT_LANGUAGE}
        for base in (self.override, PACKAGED, SOURCE_TREE):
            if base is None or not base.is_dir():
                continue
            found.update(d.name for d in base.iterdir() if (d / f"{name}.txt.j2").is_file())
        return [DEFAULT_LANGUAGE, *sorted(found - {DEFAULT_LANGUAGE})]

    def render(self, name: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) of template `name`."""
        try:
            tmpl = self.text_env.get_template(f"{name}.txt.j2")
            ctx = tmpl.new_context(context)
            subject = "".join(tmpl.blocks["subject"](ctx))
            text = "".join(tmpl.blocks["body"](tmpl.new_context(context))).strip("\n") + "\n"
            html = self.html_env.get_template(f"{name}.html.j2").render({**context, "subject": subject})
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"template {e.name} not found") from None
        except (jinja2.TemplateError, KeyError) as e:
            raise TemplateError(f"template {name}: {e}") from None
        return sanitize.header_text(subject, 250), text, html


@dataclass(frozen=True)
class Composed:
    message_id: str
    subject: str
    raw: bytes
    envelope_from: str
    recipients: tuple[str, ...]


def compose(
    *,
    from_address: str,
    from_name: str,
    to: list[str],
    subject: str,
    text: str,
    html: str | None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    auto_submitted: str | None = "auto-replied",
    extra_headers: dict[str, str] | None = None,
    now: Any = None,
) -> Composed:
    """Build the exact bytes of one outgoing mail.

    Addresses must already be validated (`sanitize.address`); anything else
    raises ValueError rather than producing a mail to the wrong place.
    """
    recipients = [sanitize.address(a) for a in to]
    if not recipients or any(r is None for r in recipients):
        raise ValueError("recipient is not a plain address")
    if sanitize.address(from_address) is None:
        raise ValueError("from address is not a plain address")
    # The bytes the compat32 generator wrote for an email.mime message of this shape, written
    # directly (`wire`: composing through the classes cost more than rendering, issue #16). Every
    # value is sanitized above or here, so nothing relies on the policy's checks.
    separator = wire.boundary() if html is not None else None
    subject = sanitize.header_text(subject, 250)
    fields = [_from_field(from_name, from_address),
              wire.field("To", ", ".join(r for r in recipients if r)),
              wire.field("Subject", _header("Subject", subject)),
              wire.field("Date", format_datetime(now or _aware_now()))]
    domain = from_address.rpartition("@")[2]
    mid = make_msgid(idstring="mailbot", domain=domain)
    fields.append(wire.field("Message-ID", mid))
    parent = sanitize.message_id(in_reply_to)
    if parent:
        fields.append(wire.field("In-Reply-To", parent))
    refs = sanitize.references([*(references or []), *([parent] if parent else [])])
    if refs:
        fields.append(wire.field("References", " ".join(refs)))
    if auto_submitted:
        # RFC 3834, and Exchange's own switch so its autoresponders stay quiet
        fields.append(wire.field("Auto-Submitted", auto_submitted))
        fields.append(wire.field("X-Auto-Response-Suppress", "All"))
    for k, v in (extra_headers or {}).items():
        fields.append(wire.field(k, _header(k, sanitize.header_text(v, 200))))
    # the MIME fields come after the addressing ones, where a person reading the source expects them
    text = text if text.endswith("\n") else text + "\n"
    if html is None or separator is None:
        fields.append(wire.single(text))
    else:
        fields.append(wire.alternative(text, html if html.endswith("\n") else html + "\n", separator))
    return Composed(mid, subject, b"".join(fields), from_address, tuple(r for r in recipients if r))


@functools.lru_cache(maxsize=16)
def _from_field(name: str, address: str) -> bytes:
    """The From field: the same for every mail of a desk, so made once."""
    return wire.field("From", formataddr((sanitize.header_text(name, 100), address), charset="utf-8"))


def _header(name: str, value: str) -> str | Header:
    """ASCII as it is (folded like any field); anything else as RFC 2047 encoded words,
    folded with room for the header's name."""
    return value if value.isascii() else Header(value, "utf-8", header_name=name)


def _aware_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
