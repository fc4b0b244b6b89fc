"""Composing from pieces made once (`outgoing.wire`, issue #16) writes the bytes the email.mime
composition wrote, for the same inputs: every shipped template, and generated subjects, names,
addresses, threads and texts, compared whole with the Message-ID, the Date and the boundary fixed."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32
from email.utils import format_datetime, formataddr
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbot.outgoing import render, sanitize, wire
from mailbot.outgoing.render import SAMPLE_CONTEXT, Renderer

FIXED_ID = "<1764496800.4242.1717.mailbot@example.org>"
NOW = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)

# -- the composition as it was (f0d7b3d), the reference --------------------------------------

_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
_CRLF = compat32.clone(linesep="\r\n")


def _text_part(content: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part.set_payload(content if content.endswith("\n") else content + "\n", _UTF8_QP)
    return part


def _header(name: str, value: str) -> str:
    return value if value.isascii() else cast(str, Header(value, "utf-8", header_name=name))


def as_it_was(*, from_address: str, from_name: str, to: list[str], subject: str, text: str, html: str | None,
              in_reply_to: str | None = None, references: list[str] | None = None,
              auto_submitted: str | None = "auto-replied", extra_headers: dict[str, str] | None = None,
              now: Any = None) -> bytes:
    recipients = [sanitize.address(a) for a in to]
    body: Message
    if html is None:
        body = _text_part(text, "plain")
    else:
        body = MIMEMultipart("alternative")
        body.attach(_text_part(text, "plain"))
        body.attach(_text_part(html, "html"))
    mime = [(k, body[k]) for k in ("MIME-Version", "Content-Type", "Content-Transfer-Encoding") if k in body]
    for k, _v in mime:
        del body[k]
    subject = sanitize.header_text(subject, 250)
    body["From"] = formataddr((sanitize.header_text(from_name, 100), from_address), charset="utf-8")
    body["To"] = ", ".join(r for r in recipients if r)
    body["Subject"] = _header("Subject", subject)
    body["Date"] = format_datetime(now)
    body["Message-ID"] = FIXED_ID
    parent = sanitize.message_id(in_reply_to)
    if parent:
        body["In-Reply-To"] = parent
    refs = sanitize.references([*(references or []), *([parent] if parent else [])])
    if refs:
        body["References"] = " ".join(refs)
    if auto_submitted:
        body["Auto-Submitted"] = auto_submitted
        body["X-Auto-Response-Suppress"] = "All"
    for k, v in (extra_headers or {}).items():
        body[k] = _header(k, sanitize.header_text(v, 200))
    for k, v in mime:
        body[k] = v
    return body.as_bytes(policy=_CRLF)  # the generator makes the boundary (one random.randrange)


@pytest.fixture(autouse=True)
def fixed_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "make_msgid", lambda idstring=None, domain=None: FIXED_ID)


def both(seed: int, **kw: Any) -> tuple[bytes, bytes]:
    """(as it was, as it is), each drawing its boundary from `random` seeded alike."""
    random.seed(seed)
    before = as_it_was(**kw)
    random.seed(seed)
    after = render.compose(**kw).raw
    return before, after


@pytest.mark.parametrize("template", Renderer().names())
@pytest.mark.parametrize("language", ["en", "de"])
def test_every_shipped_template_composes_to_the_same_bytes(template: str, language: str) -> None:
    subject, text, html = Renderer(language=language).render(template, dict(SAMPLE_CONTEXT))
    kw: dict[str, Any] = dict(from_address="delist@example.org", from_name="Example Delist Desk",
                              to=["erik.admin@contoso-sender.example"], subject=subject, text=text, html=html,
                              in_reply_to="<fw-1@contoso-sender.example>", references=["<orig@contoso.example>"],
                              extra_headers={"X-Mailbot-Ticket": "DL-000123"}, now=NOW)
    before, after = both(7, **kw)
    assert after == before
    before, after = both(8, **{**kw, "html": None, "auto_submitted": None, "in_reply_to": None})
    assert after == before


ADDRESS = st.builds(lambda local, host: f"{local}@{host}.example",
                    st.text("abcdefghij.+-_0123456789", min_size=1, max_size=80).filter(
                        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s),
                    st.text("abcdefghij-", min_size=1, max_size=40).filter(lambda s: s[0] != "-" and s[-1] != "-"))
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
LINES = st.lists(st.one_of(TEXT, st.text("ab =.-", max_size=200), st.just("")), max_size=8).map("\n".join)
MSGID = st.builds(lambda a, b: f"<{a}@{b}.example>", st.text("abcdef0123.$", min_size=1, max_size=60),
                  st.text("abcdef", min_size=1, max_size=20))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=TEXT, from_name=TEXT, to=st.lists(ADDRESS, min_size=1, max_size=3), text=LINES,
       html=st.one_of(st.none(), LINES), in_reply_to=st.one_of(st.none(), MSGID, TEXT),
       references=st.lists(st.one_of(MSGID, TEXT), max_size=40), auto=st.sampled_from([None, "auto-replied",
                                                                                       "auto-generated"]),
       ticket=st.one_of(st.none(), st.just("DL-000042"), TEXT),
       offset=st.integers(-12 * 60, 14 * 60), seed=st.integers(0, 2**32))
def test_generated_mails_compose_to_the_same_bytes(subject: str, from_name: str, to: list[str], text: str,
                                                   html: str | None, in_reply_to: str | None, references: list[str],
                                                   auto: str | None, ticket: str | None, offset: int,
                                                   seed: int) -> None:
    now = NOW.astimezone(timezone(timedelta(minutes=offset)))
    before, after = both(seed, from_address="delist@example.org", from_name=from_name, to=to, subject=subject,
                         text=text, html=html, in_reply_to=in_reply_to, references=references, auto_submitted=auto,
                         extra_headers={"X-Mailbot-Ticket": ticket} if ticket is not None else None, now=now)
    assert after == before


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(["Subject", "To", "From", "References", "X-Mailbot-Ticket", "Message-ID"]),
       value=st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100), TEXT))
def test_a_field_is_written_as_the_generator_writes_it(name: str, value: str) -> None:
    assert wire.field(name, value) == wire.POLICY.fold_binary(name, value)


# a body's lines: short and long, ending in spaces or tabs, at and around 76 characters, with
# "=", non-ASCII, control characters and every line end (and the characters str.splitlines
# would split on but quoted-printable quotes)
BODY_PIECES = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", " ", "\t", "=", "é", "\x85", "\x0b", "\x1c", "\u2028", "\r", "\n", "\r\n", "a" * 75,
                     "a" * 76, "a" * 77, "b" * 74 + "=", "c" * 73 + "é", "d" * 75 + " ", "e" * 76 + "\t",
                     "f" * 74 + " ", "g" * 73 + "\t", "h" * 150 + " ", "i" * 149 + " ", "j" * 151 + "\t", "=" * 80]))


@settings(max_examples=2000, deadline=None)
@given(parts=st.lists(BODY_PIECES, max_size=12))
def test_a_body_is_what_quoprimime_writes_with_crlf_line_ends(parts: list[str]) -> None:
    content = "".join(parts)
    reference = quoprimime.body_encode(content.encode("utf-8").decode("latin-1"))
    assert wire.body(content) == "\r\n".join(re.split(r"\r\n|\r|\n", reference)).encode("ascii")
