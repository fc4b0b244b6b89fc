"""Specification of the extraction stage, one rule or forward style per test.

Every message here is built in the test; the corpus tests are elsewhere.
"""

from __future__ import annotations

import base64
import gc
import quopri
import struct
import time

from mailbot.extraction import Extraction, Finding, extract

FORWARDER_HEADERS = (
    "Received: from mail.forwarder.example (mail.forwarder.example [192.0.2.200])\n"
    " by mx.example.org (Postfix) with ESMTPS id 4XyZ for <delist@example.org>;\n"
    " Tue, 03 Jun 2025 12:59:03 +0000\n"
    "Received: from [10.0.5.23] (unknown [2001:db8:ffff::25]) by mail.forwarder.example;\n"
    " Tue, 03 Jun 2025 12:59:03 +0000\n"
    "From: Erik Admin <erik@sender.example>\n"
    "To: delist@example.org\n"
    "Subject: FW: Undeliverable\n"
    "MIME-Version: 1.0\n"
)

BAN_606 = (
    "550 5.7.606 Access denied, banned sending IP [203.0.113.45]. To request removal from "
    "this list please visit https://sender.office.com/ and follow the directions."
)

NDR_TEXT = (
    "This is the mail system at host mail.sender.example.\n"
    "\n"
    "<bob@example.com>: host example-com.mail.protection.outlook.com[104.47.74.10] said:\n"
    "    550 5.7.606 Access denied, banned sending IP [203.0.113.45]. To request\n"
    "    removal from this list please visit https://sender.office.com/ and follow\n"
    "    the directions. (in reply to RCPT TO command)\n"
)

DSN_FIELDS = (
    "Reporting-MTA: dns; mail.sender.example\n"
    "\n"
    "Final-Recipient: rfc822; bob@example.com\n"
    "Action: failed\n"
    "Status: 5.0.0\n"
    "Remote-MTA: dns; example-com.mail.protection.outlook.com\n"
    f"Diagnostic-Code: smtp; {BAN_606}\n"
)

RETURNED_HEADERS = (
    "Received: from laptop.sender.example (unknown [198.51.100.77])\n"
    "\tby mail.sender.example (Postfix); Tue, 03 Jun 2025 09:14:01 +0000\n"
    "From: Alice <alice@sender.example>\n"
    "Subject: Quarterly figures\n"
)


def report(text: str = NDR_TEXT, dsn: str = DSN_FIELDS, headers: str = RETURNED_HEADERS) -> str:
    """An RFC 3464 multipart/report NDR."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mail.sender.example>\n"
        "To: alice@sender.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
        "\n--B\nContent-Type: text/plain; charset=us-ascii\n\n"
        f"{text}\n--B\nContent-Type: message/delivery-status\n\n{dsn}\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{headers}\n--B--\n"
    )


def forward_attached(inner: str, ctype: str = "message/rfc822", extra: str = "") -> bytes:
    return (
        FORWARDER_HEADERS + 'Content-Type: multipart/mixed; boundary="F"\n\n'
        "--F\nContent-Type: text/plain\n\nPlease remove the block, see attached.\n\n"
        f"--F\nContent-Type: {ctype}{extra}\n\n{inner}\n--F--\n"
    ).encode()


def inline(body: str, ctype: str = "text/plain", cte: str = "8bit") -> bytes:
    data = body.encode()
    if cte == "quoted-printable":
        data = quopri.encodestring(data)
    elif cte == "base64":
        data = base64.encodebytes(data)
    head = FORWARDER_HEADERS + f'Content-Type: {ctype}; charset="utf-8"\n'
    return head.encode() + f"Content-Transfer-Encoding: {cte}\n\n".encode() + data


def assert_ban_606(ex: Extraction) -> None:
    assert (ex.reply_code, ex.status, ex.ips) == ("550", "5.7.606", ("203.0.113.45",)), ex
    assert ex.unreadable is None


# The NDR sent directly ----------------------------------------------------------


def test_rfc3464_report_generic_status_yields_to_the_diagnostic_code() -> None:
    ex = extract(report().encode())
    assert_ban_606(ex)
    assert ex.primary is not None
    assert ex.primary.source == "2 message/delivery-status"
    assert ex.primary.text.startswith("550 5.7.606 Access denied")
    assert ex.primary.recipient == "bob@example.com"


def test_status_field_fills_in_where_the_text_has_no_enhanced_code() -> None:
    dsn = DSN_FIELDS.replace(f"Diagnostic-Code: smtp; {BAN_606}", "Diagnostic-Code: smtp; 550 No such user")
    ex = extract(report(text="Delivery failed.", dsn=dsn).encode())
    assert (ex.reply_code, ex.status, ex.ips) == ("550", "5.0.0", ())


def test_never_reports_a_code_that_is_not_in_the_mail() -> None:
    ex = extract(inline("Your message could not be delivered. The recipient does not exist.\n"))
    assert ex.primary is None and ex.findings == ()
    assert "no rejection line found" in ex.notes


def test_microsoft_365_ndr_layout_511() -> None:
    body = (
        "Your message to bob@example.com couldn't be delivered.\n"
        "Error: 5.7.1 (a paraphrase of the server's reply)\n"
        "\n"
        "Diagnostic information for administrators:\n"
        "\n"
        "Generating server: BN6PR00MB0001.namprd00.prod.outlook.com\n"
        "\n"
        "bob@example.com\n"
        "Remote Server returned '550 5.7.511 Access denied, banned sender[203.0.113.45]. To "
        "request removal from this list please forward this message to delist@messaging.microsoft.com'\n"
        "\n"
        "Original message headers:\n"
        "Received: from laptop (198.51.100.77) by BN6PR00MB0001; Tue, 3 Jun 2025\n"
    )
    ex = extract(inline(body))
    assert (ex.reply_code, ex.status, ex.ips) == ("550", "5.7.511", ("203.0.113.45",))
    assert ex.text is not None and not ex.text.endswith("'")


def test_microsoft_606_649_family_and_ipv6() -> None:
    line = "550 5.7.649 Access denied, banned sending IP [2001:db8:1:2::45]. Visit the portal."
    ex = extract(inline(f"Remote Server returned '{line}'\n"))
    assert (ex.status, ex.ips) == ("5.7.649", ("2001:db8:1:2::45",))


# Which IPs count ----------------------------------------------------------------


def test_relay_host_connection_and_narration_ips_are_not_reported() -> None:
    cases = {
        "host mx.example.com[198.51.100.7] said: 550 5.7.1 rejected": (),
        "Server at mx.example.com (198.51.100.7) returned '550 5.7.1 blocked'": (),
        "connect to mx.example.com[198.51.100.7]:25: 451 4.4.1 Connection refused": (),
        "198.51.100.7 does not like recipient.\nRemote host said: 550 5.1.1 unknown": (),
        "Giving up on 198.51.100.7.\n550 5.4.7 expired": (),
        "421 4.7.0 [TSS04] Messages from 203.0.113.9 deferred - 4.16.55.1; see": ("203.0.113.9",),
        "said: 554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked": ("203.0.113.9",),
    }
    for text, ips in cases.items():
        ex = extract(inline(text + "\n"))
        assert ex.ips == ips, (text, ex)


def test_forwarder_received_headers_and_returned_headers_are_never_read() -> None:
    ex = extract(report().encode())
    everything = {ip for f in ex.findings for ip in f.ips}
    assert not everything & {"192.0.2.200", "2001:db8:ffff::25", "198.51.100.77"}


def test_masked_ips_are_not_ips() -> None:
    line = "550 5.7.606 Access denied, banned sending IP [XXX.XX.XXX.XXX]. Visit the portal."
    ex = extract(inline(line + "\n"))
    assert (ex.status, ex.ips) == ("5.7.606", ())


# Wrapped lines ------------------------------------------------------------------


def test_reply_code_wrapped_away_from_its_status_is_joined() -> None:
    text = (
        "<bob@y.example>: host mta6.am0.yahoodns.net[67.195.204.72] said: 421\n"
        "    4.7.0 [TSS04] Messages from 203.0.113.9 temporarily deferred\n"
    )
    ex = extract(inline(text))
    assert (ex.reply_code, ex.status, ex.ips) == ("421", "4.7.0", ("203.0.113.9",))
    assert ex.primary is not None and ex.primary.recipient == "bob@y.example"


def test_line_wrapped_by_the_forwarding_client_is_joined() -> None:
    text = (
        "Remote Server returned '550 5.7.606 Access denied, banned sending IP\n"
        "[203.0.113.45]. To request removal from this list please visit the portal.'\n"
    )
    assert_ban_606(extract(inline(text)))


# Several recipients; evidence ---------------------------------------------------


def test_every_recipient_is_reported_first_record_primary() -> None:
    dsn = (
        "Reporting-MTA: dns; mail.sender.example\n\n"
        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <a@example.com>... User unknown\n\n"
        "Final-Recipient: rfc822; b@example.com\nAction: failed\nStatus: 5.7.606\n"
        f"Diagnostic-Code: smtp; {BAN_606}\n"
    )
    ex = extract(report(text="Delivery failed.", dsn=dsn).encode())
    assert [(f.recipient, f.status) for f in ex.findings] == [
        ("a@example.com", "5.1.1"),
        ("b@example.com", "5.7.606"),
    ]
    assert ex.primary == ex.findings[0]


def test_evidence_names_part_and_line() -> None:
    ex = extract(forward_attached(report()))
    f = ex.primary
    assert isinstance(f, Finding)
    assert f.source == "2 message/rfc822 > 2 message/delivery-status"
    assert f.line == 7  # the Diagnostic-Code line of the delivery-status part
    ex = extract(inline("Hello,\n\nplease delist.\n\n" + NDR_TEXT))
    assert ex.primary is not None and (ex.primary.source, ex.primary.line) == ("1 text/plain", 7)
    assert ex.as_json("x.eml")["line"] == 7


# Forward styles -----------------------------------------------------------------


def test_forward_as_message_rfc822_attachment() -> None:
    assert_ban_606(extract(forward_attached(report())))


def test_forward_as_eml_octet_stream_attachment() -> None:
    ex = extract(forward_attached(report(), "application/octet-stream", '; name="ndr.eml"'))
    assert_ban_606(ex)


def test_forward_of_a_forward() -> None:
    inner = forward_attached(report()).decode()
    assert_ban_606(extract(forward_attached(inner)))


def test_outlook_inline_quoted_printable() -> None:
    body = (
        "Please remove the block.\n\n-----Original Message-----\nFrom: Mail Delivery System\n"
        "Sent: Tuesday, June 3, 2025 9:14 AM\nSubject: Undeliverable\n\n" + NDR_TEXT + "\n" + DSN_FIELDS
    )
    assert_ban_606(extract(inline(body, cte="quoted-printable")))


def test_gmail_inline_base64() -> None:
    body = "---------- Forwarded message ---------\nFrom: MAILER-DAEMON\n\n" + NDR_TEXT
    assert_ban_606(extract(inline(body, cte="base64")))


def test_quoted_with_angle_brackets() -> None:
    body = "Begin forwarded message:\n\n" + "".join("> " + ln + "\n" for ln in NDR_TEXT.splitlines())
    assert_ban_606(extract(inline(body)))


def test_html_only_forward() -> None:
    html = (
        "<html><body><p>"
        + "<br>\n".join(ln.replace("<", "&lt;").replace(">", "&gt;") for ln in NDR_TEXT.splitlines())
        + "</p></body></html>"
    )
    assert_ban_606(extract(inline(html, ctype="text/html", cte="quoted-printable")))


def test_odd_and_unknown_charsets() -> None:
    body = "Ümlaut notice\n" + NDR_TEXT
    raw = inline(body).replace(b'charset="utf-8"', b'charset="x-no-such-charset"')
    assert_ban_606(extract(raw))
    latin = FORWARDER_HEADERS.encode() + b"Content-Type: text/plain; charset=iso-8859-1\n\n"
    assert_ban_606(extract(latin + ("Mitteilung \xfcber\n" + NDR_TEXT).encode("latin-1")))


def test_cr_only_line_ends() -> None:
    assert_ban_606(extract(report().replace("\n", "\r").encode()))


# Outlook attachments ------------------------------------------------------------


def _tnef(body: bytes) -> bytes:
    # TNEF stream: signature, key, then one attBody attribute at message level.
    attr = struct.pack("<BHHI", 1, 0x800C, 0x0001, len(body)) + body
    return struct.pack("<IH", 0x223E9F78, 0) + attr + struct.pack("<H", sum(body) & 0xFFFF)


def _attachment(name: str, ctype: str, data: bytes) -> bytes:
    b64 = base64.encodebytes(data).decode()
    return forward_attached(
        b64,
        ctype,
        f'; name="{name}"\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="{name}"',
    )


def test_winmail_dat_body_is_read() -> None:
    ex = extract(_attachment("winmail.dat", "application/ms-tnef", _tnef(NDR_TEXT.encode())))
    assert_ban_606(ex)
    assert ex.primary is not None and "winmail.dat" in ex.primary.source


def test_truncated_winmail_dat_gives_a_note() -> None:
    ex = extract(_attachment("winmail.dat", "application/ms-tnef", _tnef(NDR_TEXT.encode())[:7]))
    assert ex.primary is None and ex.unreadable is None
    assert any(n.startswith("winmail.dat:") for n in ex.notes), ex.notes


def test_msg_that_is_not_ole_gives_a_note() -> None:
    ex = extract(_attachment("ndr.msg", "application/vnd.ms-outlook", b"this is not an OLE file"))
    assert ex.primary is None
    assert any("ndr.msg: unreadable" in n and "OLE" in n for n in ex.notes), ex.notes


def test_corrupt_ole_msg_gives_a_note() -> None:
    junk = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600
    ex = extract(_attachment("ndr.msg", "application/vnd.ms-outlook", junk))
    assert ex.primary is None and any(n.startswith("ndr.msg:") for n in ex.notes)


# Hostile input ------------------------------------------------------------------


def _timed(raw: bytes) -> Extraction:
    start = time.monotonic()
    ex = extract(raw)
    assert time.monotonic() - start < 2.0
    return ex


def test_two_thousand_nested_messages() -> None:
    raw = report()
    for _ in range(2000):
        raw = "Content-Type: message/rfc822\n\n" + raw
    # What earlier tests left to the garbage collector is collected here, at a shallow stack: the
    # stdlib parser recurses to the limit below, where a finalizer the collector runs would fail.
    gc.collect()
    ex = _timed(raw.encode())
    assert isinstance(ex, Extraction)
    assert ex.notes


def test_subject_of_32000_encoded_words() -> None:
    subject = " ".join(["=?utf-8?q?abc?="] * 32000)
    raw = report().replace("Subject: Undelivered Mail Returned to Sender", f"Subject: {subject}")
    assert_ban_606(_timed(raw.encode()))


def test_nul_bytes() -> None:
    raw = report().replace("This is the mail", "This\x00 is\x00 the mail").encode()
    assert_ban_606(_timed(raw + b"\x00" * 10_000))


def test_invalid_base64() -> None:
    raw = FORWARDER_HEADERS + "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!*** not base64 @@@\n"
    ex = _timed(raw.encode())
    assert ex.primary is None and ex.unreadable is None


def test_empty_junk_and_non_bytes() -> None:
    assert extract(b"").unreadable == "unreadable: empty message"
    assert extract(b"\xff\xfe\x00garbage").primary is None
    assert extract("not bytes").unreadable == "unreadable: not bytes"  # type: ignore[arg-type]


def test_many_parts_and_huge_lines() -> None:
    parts = "".join(f"--B\nContent-Type: text/plain\n\n550 5.1.1 user{i} unknown\n" for i in range(3000))
    raw = FORWARDER_HEADERS + 'Content-Type: multipart/mixed; boundary="B"\n\n' + parts + "--B--\n"
    ex = _timed(raw.encode())
    assert ex.status == "5.1.1"
    assert any("MIME parts" in n for n in ex.notes)
    _timed(inline("550 " * 500_000))
