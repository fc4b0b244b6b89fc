"""No inbound byte reaches an outgoing header unchecked."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailbot.outgoing import sanitize
from mailbot.outgoing.render import compose
from mailbot.source import inbound


@pytest.mark.parametrize(("header", "expected"), [
    ("Erik Admin <erik@contoso.example>", "erik@contoso.example"),
    ('"Admin, Erik" <erik@contoso.example>', "erik@contoso.example"),
    ("erik@contoso.example", "erik@contoso.example"),
    ("=?UTF-8?Q?J=C3=B6rg?= <joerg@contoso.example>", "joerg@contoso.example"),
    ("alice@example.org)<bob@example.org>", None),       # CVE-2023-27043 shape
    ("alice@example.org, bob@example.org", None),
    ('"alice@example.org" <bob@example.org>', None),
    ("<bob@example.org> (x) <eve@example.org>", None),
    ("bob@example.org\r\nBcc: eve@example.org", None),
    ('"', None),
    ("", None),
])
def test_a_reply_goes_only_to_one_plainly_written_address(header: str, expected: str | None) -> None:
    assert sanitize.mailbox_address(header) == expected


def test_header_text_loses_line_breaks_and_controls_and_is_capped() -> None:
    assert sanitize.header_text("a\r\nBcc: x@example.org\u2028b\x00c") == "a Bcc: x@example.org b c"
    assert len(sanitize.header_text("x" * 5000)) == sanitize.MAX_HEADER_TEXT


def test_message_ids_are_strict_and_references_trimmed() -> None:
    assert sanitize.message_id("<a.b@c.example>") == "<a.b@c.example>"
    assert sanitize.message_id("<[abc==@microsoft.com]>") is None
    assert sanitize.message_id("<a@b>\r\nBcc: x") is None
    refs = sanitize.references([f"<r{i}@x.example>" for i in range(30)] + ["junk", "<r29@x.example>"])
    assert refs == [f"<r{i}@x.example>" for i in range(20, 30)]


def test_an_encoded_newline_in_the_subject_cannot_add_a_header_to_our_reply() -> None:
    raw = (b"From: Alice <alice@example.org>\r\nTo: delist@example.org\r\n"
           b"Subject: =?UTF-8?Q?x=0ABcc:_victim@example.org?=\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n")
    head = inbound.parse(raw)
    mail = compose(from_address="delist@example.org", from_name="Desk", to=[head.sender or ""],
                   subject=f"[DL-000001] Re: {head.subject}", text="body", html=None,
                   in_reply_to=head.reply_msgid, references=head.references)
    out = email.message_from_bytes(mail.raw, policy=email.policy.default)
    assert out.get_all("Subject") == ["[DL-000001] Re: x Bcc: victim@example.org"]
    assert out.get_all("Bcc") is None
    assert mail.recipients == ("alice@example.org",)


def test_compose_refuses_a_recipient_that_is_not_a_plain_address() -> None:
    with pytest.raises(ValueError):
        compose(from_address="delist@example.org", from_name="Desk", to=["a@example.org>, <b@example.org"],
                subject="s", text="t", html=None)
