"""The exact bytes of an outgoing mail (`render.compose`), as a mail client reads them."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

from mailbot.outgoing.render import compose


def read(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def text_of(part: EmailMessage | None) -> str:
    """A part's text as a client shows it (the wire's CRLF line ends made local)."""
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def test_a_reply_with_both_parts_threads_to_the_forward_and_says_it_is_automatic() -> None:
    mail = compose(from_address="delist@example.org", from_name="Example Delist Desk", to=["ann@one.example"],
                   subject="[DL-000007] Delisting request received", text="Your request is DL-000007.\n",
                   html="<p>Your request is DL-000007.</p>", in_reply_to="<fw-1@one.example>",
                   references=["<orig@one.example>"], extra_headers={"X-Mailbot-Ticket": "DL-000007"},
                   now=datetime(2026, 11, 28, 9, 30, tzinfo=UTC))
    msg = read(mail.raw)
    assert msg["From"] == "Example Delist Desk <delist@example.org>"
    assert msg["To"] == "ann@one.example"
    assert msg["Subject"] == mail.subject == "[DL-000007] Delisting request received"
    assert msg["Date"] == "Sat, 28 Nov 2026 09:30:00 +0000"
    assert msg["Message-ID"] == mail.message_id and mail.message_id.endswith("@example.org>")
    assert msg["In-Reply-To"] == "<fw-1@one.example>"
    assert msg["References"] == "<orig@one.example> <fw-1@one.example>"
    assert (msg["Auto-Submitted"], msg["X-Auto-Response-Suppress"]) == ("auto-replied", "All")
    assert msg["X-Mailbot-Ticket"] == "DL-000007"
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text_of(plain) == "Your request is DL-000007.\n"
    assert text_of(html).strip() == "<p>Your request is DL-000007.</p>"
    assert not msg.defects and not any(part.defects for part in msg.walk())
    assert (mail.envelope_from, mail.recipients) == ("delist@example.org", ("ann@one.example",))


def test_every_line_ends_in_crlf_and_stays_short_whatever_the_text() -> None:
    long_line = "word " * 400
    mail = compose(from_address="delist@example.org", from_name="Desk", to=["ann@one.example"],
                   subject="[DL-000001] " + "very long subject " * 20, text=long_line, html=f"<p>{long_line}</p>",
                   references=[f"<r{i}@one.example>" for i in range(10)])
    lines = mail.raw.split(b"\r\n")
    assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)
    assert max(len(line) for line in lines) <= 998  # RFC 5322's hard limit
    assert max(len(line) for line in lines) <= 78  # and its recommendation: headers fold, bodies are QP
    msg = read(mail.raw)
    # capped at 250 characters, and folded over several lines, it still reads as one subject
    assert msg["Subject"] == mail.subject == ("[DL-000001] " + "very long subject " * 20)[:249].rstrip() + "…"
    assert text_of(msg.get_body(("plain",))) == long_line + "\n"


def test_non_ascii_names_subjects_and_bodies_arrive_as_written() -> None:
    mail = compose(from_address="delist@example.org", from_name="Entlistungs-Schalter Köln", to=["joerg@example.de"],
                   subject="[DL-000002] Anfrage erhalten: Grüße, ½ → ✓",
                   text="Grüße aus Köln — ✓\n", html=None, extra_headers={"X-Mailbot-Ticket": "DL-000002 ü"})
    assert mail.raw.isascii()  # 7-bit on the wire: encoded words and quoted-printable
    msg = read(mail.raw)
    assert msg["From"] == "Entlistungs-Schalter Köln <delist@example.org>"
    assert msg["Subject"] == "[DL-000002] Anfrage erhalten: Grüße, ½ → ✓"
    assert msg["X-Mailbot-Ticket"] == "DL-000002 ü"
    assert msg.get_content_type() == "text/plain" and text_of(msg) == "Grüße aus Köln — ✓\n"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"


def test_a_display_name_with_specials_is_quoted_not_split_into_addresses() -> None:
    mail = compose(from_address="delist@example.org", from_name='Desk, "Delist" <team>', to=["ann@one.example"],
                   subject="s", text="t", html=None)
    msg = read(mail.raw)
    [addr] = msg["From"].addresses
    assert (addr.display_name, addr.addr_spec) == ('Desk, "Delist" <team>', "delist@example.org")
