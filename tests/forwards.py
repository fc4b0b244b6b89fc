"""Bounces and forwards of them, built in the styles of the corpus (tests/corpus/README.md).

`ndr(flavour, rcpt, host, host_ip, line)` writes the bounce a sending server
makes of one rejection line: "postfix" (multipart/report with a text part,
a delivery-status part and the returned headers, like tests/corpus/found/),
"exim" (a text part only, Exim's wording) or "exchange" (Microsoft 365's
NDR: a paraphrase, then "Remote Server returned '...'"). `STYLES` maps each
forward variant of the corpus to a function of the bounce's bytes giving the
forward a person sends to delist@: every one carries the forwarder's own
Received: headers with the decoy IPs (192.0.2.200, 2001:db8:ffff::25).
Used by tests/test_classify.py and tests/test_extraction_pasted.py.
"""

from __future__ import annotations

import base64
import quopri
import textwrap
from collections.abc import Callable
from email import message_from_bytes

DECOYS = ("192.0.2.200", "2001:db8:ffff::25")

FORWARDER = (
    "Received: from mail.forwarder.example (mail.forwarder.example [192.0.2.200])\n"
    " by mx.example.org (Postfix) with ESMTPS id 4XyZ4723913 for <delist@example.org>;\n"
    " Tue, 03 Jun 2025 11:24:03 +0000\n"
    "Received: from [10.0.5.23] (unknown [2001:db8:ffff::25]) by mail.forwarder.example\n"
    " with ESMTPSA id 4723913; Tue, 03 Jun 2025 11:24:03 +0000\n"
    "From: Erik Admin <erik@sender.example>\n"
    "To: delist@example.org\n"
    "Subject: Fwd: Undelivered Mail Returned to Sender\n"
    "Date: Tue, 03 Jun 2025 11:24:03 +0000\n"
    "Message-ID: <fwd-{style}@forwarder.example>\n"
    "MIME-Version: 1.0\n"
)
NOTE = "Hello,\n\nour mail to your users is being rejected. The rejection notice is below. Please remove the block.\n\n"

RETURNED = (
    "Return-Path: <alice@sender.example>\n"
    "Received: from laptop.sender.example (unknown [198.51.100.77])\n"
    "\tby mail.sender.example (Postfix) with ESMTPSA id 4Q00016X;\n"
    "\tTue, 03 Jun 2025 09:14:01 +0000\n"
    "From: Alice <alice@sender.example>\n"
    "To: Bob <{rcpt}>\n"
    "Subject: Quarterly figures\n"
    "Message-ID: <orig@sender.example>\n"
)


def _wrapped(line: str, indent: str = "    ") -> str:
    return textwrap.fill(line, 72, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


def ndr(flavour: str, rcpt: str, host: str, host_ip: str, line: str, status: str = "5.0.0") -> bytes:
    """The bounce of one rejection `line` by `host`; `status` is the DSN Status field where the line's
    own enhanced code is missing (Postfix writes 5.0.0, or 4.0.0 for a deferral)."""
    head = (
        "Return-Path: <>\n"
        "From: MAILER-DAEMON@mail.sender.example (Mail Delivery System)\n"
        "To: alice@sender.example\n"
        "Date: Tue, 03 Jun 2025 09:14:03 +0000\n"
        "Message-ID: <ndr@mail.sender.example>\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
    )
    if flavour == "postfix":
        text = (
            "This is the mail system at host mail.sender.example.\n\n"
            "Your message could not be delivered to one or more recipients.\n"
            "The returned headers are attached below.\n\n"
            "                   The mail system\n\n"
            + _wrapped(f"<{rcpt}>: host {host}[{host_ip}] said: {line} (in reply to RCPT TO command)", "")
            .replace("\n", "\n    ")
            + "\n"
        )
        dsn = (
            "Reporting-MTA: dns; mail.sender.example\n\n"
            f"Final-Recipient: rfc822; {rcpt}\nOriginal-Recipient: rfc822;{rcpt}\nAction: failed\n"
            f"Status: {status}\nRemote-MTA: dns; {host}\n"
            f"Diagnostic-Code: smtp; {_wrapped(line, '').replace(chr(10), chr(10) + '    ')}\n"
        )
        body = (
            "Subject: Undelivered Mail Returned to Sender\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="=_pf"\n\n'
            "This is a MIME-encapsulated message.\n\n"
            f"--=_pf\nContent-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n{text}\n"
            f"--=_pf\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n{dsn}\n"
            "--=_pf\nContent-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n\n"
            f"{RETURNED.format(rcpt=rcpt)}\n--=_pf--\n"
        )
    elif flavour == "exim":
        body = (
            "Subject: Mail delivery failed: returning message to sender\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            "This message was created automatically by mail delivery software.\n\n"
            "A message that you sent could not be delivered to one or more of its\n"
            "recipients. This is a permanent error. The following address(es) failed:\n\n"
            f"  {rcpt}\n    host {host} [{host_ip}]\n"
            f"    SMTP error from remote mail server after RCPT TO:<{rcpt}>:\n{_wrapped(line)}\n\n"
            "------ This is a copy of the message's headers. ------\n\n" + RETURNED.format(rcpt=rcpt)
        )
    elif flavour == "exchange":
        body = (
            "Subject: Undeliverable: Quarterly figures\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            f"Your message to {rcpt} couldn't be delivered.\n\n"
            "Diagnostic information for administrators:\n\n"
            "Generating server: AM0PR01MB0001.eurprd01.prod.outlook.com\n\n"
            f"{rcpt}\n{host}\nRemote Server returned '{line}'\n\n"
            "Original message headers:\n\n" + RETURNED.format(rcpt=rcpt)
        )
    else:
        raise ValueError(flavour)
    return (head + body).encode()


def _visible(ndr_bytes: bytes) -> str:
    """What a mail client shows of a bounce when forwarding it inline: its text parts and its
    delivery-status fields, not the returned original."""
    msg = message_from_bytes(ndr_bytes)
    out: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("text/plain", "message/delivery-status", "text/rfc822-headers"):
            if ctype == "message/delivery-status":
                for group in part.get_payload():
                    out.extend(f"{k}: {v}" for k, v in group.items())
                    out.append("")
            else:
                payload = part.get_payload(decode=True)
                out.append(payload.decode("utf-8", "replace") if isinstance(payload, bytes) else "")
    return "\n".join(out)


def _header(style: str, ctype: str, cte: str) -> bytes:
    return (FORWARDER.format(style=style) + f'Content-Type: {ctype}; charset="utf-8"\n'
            f"Content-Transfer-Encoding: {cte}\n\n").encode()


def raw(ndr_bytes: bytes) -> bytes:
    return ndr_bytes


def fwd_attach(ndr_bytes: bytes) -> bytes:
    head = FORWARDER.format(style="fwd_attach") + 'Content-Type: multipart/mixed; boundary="F"\n\n'
    return (head + f"--F\nContent-Type: text/plain\n\n{NOTE}\n--F\nContent-Type: message/rfc822\n\n").encode() + \
        ndr_bytes + b"\n--F--\n"


def outlook_inline(ndr_bytes: bytes) -> bytes:
    body = (NOTE + "-----Original Message-----\nFrom: Mail Delivery System <MAILER-DAEMON@mail.sender.example>\n"
            "Sent: Tuesday, June 3, 2025 9:14 AM\nTo: alice@sender.example\n"
            "Subject: Undelivered Mail Returned to Sender\n\n" + _visible(ndr_bytes))
    return _header("outlook_inline", "text/plain", "quoted-printable") + quopri.encodestring(body.encode())


def gmail_inline(ndr_bytes: bytes) -> bytes:
    body = (NOTE + "---------- Forwarded message ---------\nFrom: MAILER-DAEMON@mail.sender.example\n"
            "Date: Tue, Jun 3, 2025 at 9:14 AM\nSubject: Undelivered Mail Returned to Sender\n"
            "To: alice@sender.example\n\n" + _visible(ndr_bytes))
    return _header("gmail_inline", "text/plain", "8bit") + body.encode()


def gmail_inline_b64(ndr_bytes: bytes) -> bytes:
    body = gmail_inline(ndr_bytes).split(b"\n\n", 1)[1]
    return _header("gmail_inline_b64", "text/plain", "base64") + base64.encodebytes(body)


def apple_inline(ndr_bytes: bytes) -> bytes:
    body = (NOTE + "Begin forwarded message:\n\nFrom: MAILER-DAEMON@mail.sender.example\n"
            "Subject: Undelivered Mail Returned to Sender\nDate: 3 June 2025 at 09:14:03 GMT\n"
            "To: alice@sender.example\n\n" + _visible(ndr_bytes))
    return _header("apple_inline", "text/plain", "quoted-printable") + quopri.encodestring(body.encode())


def thunderbird_inline(ndr_bytes: bytes) -> bytes:
    body = (NOTE + "-------- Forwarded Message --------\nSubject: \tUndelivered Mail Returned to Sender\n"
            "Date: \tTue, 03 Jun 2025 09:14:03 +0000\nFrom: \tMAILER-DAEMON@mail.sender.example\n"
            "To: \talice@sender.example\n\n" + _visible(ndr_bytes))
    return _header("thunderbird_inline", "text/plain", "8bit") + body.encode()


def html_only(ndr_bytes: bytes) -> bytes:
    text = _visible(ndr_bytes)
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    html = ("<html><body><div class=\"WordSection1\"><p class=\"MsoNormal\">" + NOTE.replace("\n", "<br>\n")
            + "</p><p class=\"MsoNormal\"><b>From:</b> Mail Delivery System<br>\n<b>Subject:</b> Undeliverable</p>"
            + "<p class=\"MsoNormal\">" + escaped.replace("\n", "<br>\n") + "</p></div></body></html>")
    return _header("html_only", "text/html", "quoted-printable") + quopri.encodestring(html.encode())


def terminal_inline(ndr_bytes: bytes) -> bytes:
    """A terminal client's forward (mutt without decoding, alpine): the whole original, its header
    block with mbox's Status: RO and its MIME body, pasted into the body between markers."""
    ndr_bytes = ndr_bytes.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head, _, body = ndr_bytes.partition(b"\n\n")
    return (_header("terminal_inline", "text/plain", "8bit") + NOTE.encode()
            + b"----- Forwarded message from Mail Delivery System <MAILER-DAEMON@mail.sender.example> -----\n\n"
            + head + b"\nStatus: RO\nContent-Length: 2345\nLines: 61\n\n" + body
            + b"\n\n----- End forwarded message -----\n")


STYLES: dict[str, Callable[[bytes], bytes]] = {
    "raw": raw,
    "fwd_attach": fwd_attach,
    "outlook_inline": outlook_inline,
    "gmail_inline": gmail_inline,
    "gmail_inline_b64": gmail_inline_b64,
    "apple_inline": apple_inline,
    "thunderbird_inline": thunderbird_inline,
    "html_only": html_only,
    "terminal_inline": terminal_inline,
}


def pasted(words: str, ctype: str = "text/plain", cte: str = "8bit", style: str = "pasted") -> bytes:
    """A new mail whose body is what the person wrote and pasted, as is."""
    data = words.encode()
    if cte == "quoted-printable":
        data = quopri.encodestring(data)
    elif cte == "base64":
        data = base64.encodebytes(data)
    return _header(style, ctype, cte) + data
