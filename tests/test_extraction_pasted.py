"""Rejections the way people paste them into a new mail (issue #15), and the provider's words without a code.

Each test writes the mail a person sends to delist@ (tests/forwards.py `pasted`):
quoted, escaped by a web page or a log, wrapped, a log line, a code block of
an HTML mail, their own words in four languages around it, a terminal
client's forward; and fragments of Microsoft's and Outlook.com's wording with
no code at all, whose family is reported as inferred and never as a code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import corpus_dir, ips_match, load_rows
from forwards import STYLES, ndr, pasted

from mailbot.extraction import Extraction, extract
from mailbot.extraction.fragments import MAX_FRAGMENTS

IP = "203.0.113.7"
BAN_606 = ("550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal from this list please "
           "visit https://sender.office.com/ and follow the directions.")
POSTFIX_606 = (
    "<bob@example.com>: host example-com.mail.protection.outlook.com[104.47.74.10] said:\n"
    "    550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request\n"
    "    removal from this list please visit https://sender.office.com/ and follow\n"
    "    the directions. (in reply to RCPT TO command)\n"
)


def assert_606(ex: Extraction) -> None:
    assert (ex.reply_code, ex.status, ex.ips) == ("550", "5.7.606", (IP,)), (ex.reply_code, ex.status, ex.ips, ex.text)
    assert (ex.kind, ex.issuer, ex.issuer_is_ours, ex.inferred) == ("ip_block", "microsoft", True, None)


# Quoted, escaped, wrapped ---------------------------------------------------------


@pytest.mark.parametrize("marker", ["> ", "> > ", ">> ", "> > > ", ">>>", "| > "])
def test_quoted_at_any_depth(marker: str) -> None:
    body = "I forwarded it to our admin, he says:\n\n" + "".join(marker + ln + "\n" for ln in POSTFIX_606.splitlines())
    ex = extract(pasted(body))
    assert_606(ex)
    assert ex.primary is not None and ex.primary.remote == "example-com.mail.protection.outlook.com"


def test_html_entities_left_in_plain_text_by_a_web_page() -> None:
    # Copied out of a webmail's "show original" or a ticket system: &lt; &gt; &#39; &quot; as text.
    body = ("&gt; &lt;bob@example.com&gt;: host example-com.mail.protection.outlook.com[104.47.74.10] said:\n"
            "&gt;     550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal&#39;s\n"
            "&gt;     form see https://sender.office.com/ &quot;and follow the directions&quot;\n")
    ex = extract(pasted(body))
    assert_606(ex)
    assert ex.primary is not None and ex.primary.recipient == "bob@example.com"
    assert "&#39;" not in ex.primary.text and "&quot;" not in ex.primary.text


def test_literal_line_breaks_from_a_json_log() -> None:
    # A delivery log exported as JSON: the bounce text with \r\n escapes, the next record's IPs beside it.
    body = ('{"event":"bounce","reason":"host example-com.mail.protection.outlook.com[104.47.74.10] said:\\r\\n'
            '550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal from this list please '
            'forward this message to delist@messaging.microsoft.com\\r\\n","next":{"client":"198.51.100.23"},'
            '"relay":"198.51.100.99"}\n')
    ex = extract(pasted(body))
    assert (ex.reply_code, ex.status, ex.ips) == ("550", "5.7.511", (IP,))
    assert (ex.kind, ex.issuer) == ("ip_block", "microsoft")


def test_literal_newlines_between_syslog_lines() -> None:
    body = ("Jun  3 09:14:03 mx postfix/smtp[999]: 4Q01X: to=<bob@example.com>, relay=none, status=bounced "
            "(host mx.example.com[198.51.100.3] said: 554 5.7.1 Service unavailable; Client host [203.0.113.7] "
            "blocked using zen.spamhaus.org)\\nJun  3 09:14:04 mx postfix/smtpd[1000]: connect from "
            "unknown[198.51.100.66]\\n")
    ex = extract(pasted(body))
    assert (ex.reply_code, ex.status, ex.ips) == ("554", "5.7.1", (IP,))
    assert (ex.kind, ex.issuer) == ("ip_block", "spamhaus")


def test_reply_code_and_enhanced_code_split_across_lines_at_the_same_indent() -> None:
    body = ("The server said: 550\n5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal\n"
            "from this list please visit https://sender.office.com/ and follow the directions.\n")
    assert_606(extract(pasted(body)))


def test_a_multi_line_gmail_reply_pasted_line_by_line_is_one_rejection() -> None:
    body = ("550-5.7.1 [203.0.113.7 12] Our system has detected that this message is\n"
            "550-5.7.1 likely unsolicited mail. To reduce the amount of spam sent to Gmail,\n"
            "550-5.7.1 this message has been blocked. Please visit\n"
            "550-5.7.1 https://support.google.com/mail/?p=UnsolicitedMessageError\n"
            "550 5.7.1 for more information. dh9si2656259wib.8 - gsmtp\n")
    ex = extract(pasted(body))
    assert len(ex.findings) == 1
    assert (ex.reply_code, ex.status, ex.ips, ex.kind, ex.issuer) == ("550", "5.7.1", (IP,), "content", "gmail")


def test_a_mail_log_line() -> None:
    # What the recipient's admin sends back: the Postfix log of the refusal, between other log lines.
    body = (
        "Our admin found this in the log:\n\n"
        "Jun  3 09:14:03 mx1 postfix/smtpd[1234]: connect from mail.sender.example[198.51.100.44]\n"
        "Jun  3 09:14:03 mx1 postfix/smtpd[1234]: NOQUEUE: reject: RCPT from mail.sender.example[203.0.113.7]: "
        "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/203.0.113.7; from=<alice@sender.example> to=<bob@example.com> "
        "proto=ESMTP helo=<mail.sender.example>\n"
        "Jun  3 09:14:03 mx1 postfix/smtpd[1234]: disconnect from mail.sender.example[198.51.100.44] ehlo=1 "
        "mail=1 rcpt=0/1 quit=1 commands=3/4\n"
    )
    ex = extract(pasted(body))
    assert (ex.reply_code, ex.status, ex.ips) == ("554", "5.7.1", (IP,))
    assert (ex.kind, ex.issuer) == ("ip_block", "spamhaus")


def test_a_code_block_in_an_html_mail() -> None:
    html = ("<html><body><p>Hello, our bounces look like this:</p>"
            "<pre><code>&lt;bob@example.com&gt;: host example-com.mail.protection.outlook.com[104.47.74.10] said:\n"
            "550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal from this list please\n"
            "visit https://sender.office.com/ and follow the directions.\n"
            "Jun  3 09:14:04 mx postfix/smtpd[1]: disconnect from unknown[198.51.100.99]\n"
            "</code></pre><p>Thanks, Ana</p></body></html>")
    ex = extract(pasted(html, ctype="text/html", cte="quoted-printable"))
    assert_606(ex)
    assert ex.primary is not None and "disconnect" not in ex.primary.text


@pytest.mark.parametrize("words", [
    # English, German, French, Spanish; numbers and an address of their own in the words.
    ("Hi, since yesterday about 450 of our mails a day bounce. Our server is 198.51.100.9.\n\n{ndr}\n"
     "Could you please lift the block? Thanks, Dana"),
    ("Hallo zusammen,\n\nseit gestern bekommen wir bei Mails an Kunden (ca. 450 Empfänger) folgende Meldung:\n\n"
     "{ndr}\n\nKönnt ihr die IP bitte freigeben? Unser Server ist 198.51.100.9.\nMit freundlichen Grüßen"),
    ("Bonjour,\n\nnous recevons l'erreur suivante depuis le 4 juin (550 EUR de commandes perdues) :\n\n« {ndr} »\n\n"
     "Merci d'avance pour votre aide.\n"),
    ("Hola, nos rechazan los correos con este error:\n\n{ndr}\n\n¿Pueden quitarnos de la lista? Nuestra IP de "
     "salida es 198.51.100.9. Gracias"),
])
def test_the_persons_own_words_around_it(words: str) -> None:
    ex = extract(pasted(words.format(ndr=BAN_606)))
    assert_606(ex)
    ex = extract(pasted(words.format(ndr=POSTFIX_606), cte="quoted-printable"))
    assert_606(ex)


def test_a_terminal_clients_forward_with_the_original_header_block_in_the_body() -> None:
    bounce = ndr("postfix", "bob@example.com", "example-com.mail.protection.outlook.com", "104.47.74.10", BAN_606)
    # Decoded (mutt's default): headers weeded to a few, mbox's Status: RO kept, the text parts shown.
    decoded = ("----- Forwarded message from Mail Delivery System <MAILER-DAEMON@mail.sender.example> -----\n\n"
               "Date: Tue, 03 Jun 2025 09:14:03 +0000\nFrom: Mail Delivery System <MAILER-DAEMON@mail.sender.example>"
               "\nTo: alice@sender.example\nSubject: Undelivered Mail Returned to Sender\nStatus: RO\n\n"
               + POSTFIX_606 + "\n----- End forwarded message -----\n")
    assert_606(extract(pasted(decoded)))
    # Not decoded: the whole original, its MIME body and a base64 text part included.
    assert_606(extract(STYLES["terminal_inline"](bounce)))
    b64 = bounce.replace(b"Content-Type: text/plain; charset=us-ascii\n\n", b"Content-Type: text/plain; "
                         b"charset=us-ascii\nContent-Transfer-Encoding: base64\n\n")
    head, _, rest = b64.partition(b"base64\n\n")
    text, _, tail = rest.partition(b"\n--=_pf\n")
    import base64

    b64 = head + b"base64\n\n" + base64.encodebytes(text) + b"\n--=_pf\n" + tail
    b64 = b64.replace(b"Content-Type: message/delivery-status", b"Content-Type: text/x-unread")
    ex = extract(STYLES["terminal_inline"](b64))
    assert_606(ex)
    assert ex.primary is not None and "pasted message" in ex.primary.source


ROWS = [r for r in load_rows() if r.variant == "raw" and r.scored and not r.disputed]


@pytest.mark.skipif(not (corpus_dir() / "labels.jsonl").exists(), reason="no corpus")
def test_every_corpus_bounce_forwarded_by_a_terminal_client_reads_as_well_as_any_other_style() -> None:
    status, ips = [], []
    for r in ROWS:
        ex = extract(STYLES["terminal_inline"](r.path.read_bytes()))
        status.append(ex.status == r.expected_status)
        ips.append(ips_match(r.expected_ips, ex.ips))
    # The threshold of tests/test_extraction_corpus.py for every forward variant.
    assert 100.0 * sum(status) / len(status) >= 99.0
    assert 100.0 * sum(ips) / len(ips) >= 99.0


# Fragments: the provider's words, no code --------------------------------------------


@pytest.mark.parametrize(("words", "family", "kind", "issuer", "ips"), [
    # Microsoft Learn: the wording of the self-service range and of 5.7.511, pasted alone.
    ("Hi, our mails bounce with: Access denied, banned sending IP [203.0.113.7]\n", "5.7.606-5.7.649",
     "ip_block", "microsoft", (IP,)),
    ("Access denied, banned sender[203.0.113.7]. To request removal from this list please forward this message "
     "to delist@messaging.microsoft.com\n", "5.7.511", "ip_block", "microsoft", (IP,)),
    ("Hallo, wir bekommen: Access denied, traffic not accepted from this IP. Was tun?\n", "5.7.708",
     "sender_block", "microsoft", ()),
    # Outlook.com's consumer block, wrapped by the person's client, the IP in the sentence before the code.
    ("Bonjour, Hotmail refuse nos mails :\n\nUnfortunately, messages from [203.0.113.7] weren't sent. Please\n"
     "contact your Internet service provider since part of their network is on our block\nlist (S3150). Merci\n",
     "S3150", "ip_block", "outlook_consumer", (IP,)),
    ("We only see RP-001 in our logs for hotmail.com. What does it mean?\n", "RP-001",
     "rate_limit", "outlook_consumer", ()),
    # Masked by the person: the family still counts, no IP is read.
    ("Access denied, banned sending IP [x.x.x.x]\n", "5.7.606-5.7.649", "ip_block", "microsoft", ()),
])
def test_a_fragment_is_recognised_and_its_family_inferred_never_a_code_invented(
        words: str, family: str, kind: str, issuer: str, ips: tuple[str, ...]) -> None:
    for raw in (pasted(words), pasted(words.replace("\n", "<br>\n"), ctype="text/html"),
                pasted("> " + words.replace("\n", "\n> "), cte="base64")):
        ex = extract(raw)
        assert (ex.reply_code, ex.status) == (None, None)
        assert ex.inferred is not None and ex.inferred.family == family, ex.inferred
        assert (ex.kind, ex.issuer, ex.ips) == (kind, issuer, ips), (ex.kind, ex.issuer, ex.ips, ex.text)
        assert ex.inferred.evidence.lower() in (ex.text or "").lower()
        assert ex.primary is not None and ex.primary.source and ex.primary.line
        assert "no rejection line found" not in ex.notes


def test_a_reply_code_with_the_providers_words_keeps_the_code_and_infers_the_family() -> None:
    ex = extract(pasted("The bounce says: 550 Access denied, banned sender[203.0.113.7]\n"))
    assert (ex.reply_code, ex.status, ex.ips) == ("550", None, (IP,))
    assert ex.inferred is not None and (ex.inferred.family, ex.inferred.evidence) == ("5.7.511", "banned sender")
    assert len(ex.findings) == 1


def test_a_fragment_is_ahead_of_a_number_in_the_persons_words() -> None:
    ex = extract(pasted("Seit Montag (ca. 450 Empfänger betroffen):\nAccess denied, banned sending IP [203.0.113.7]\n"))
    assert (ex.status, ex.ips) == (None, (IP,))
    assert ex.inferred is not None and ex.inferred.family == "5.7.606-5.7.649"


def test_a_full_code_anywhere_wins_over_a_fragment_and_nothing_is_inferred() -> None:
    ex = extract(pasted("Access denied, banned sender[198.51.100.1] is what we got last week.\n\n" + BAN_606 + "\n"))
    assert_606(ex)


def test_words_that_only_resemble_a_fragment_are_not_one() -> None:
    for words in ("We are banned senders now?", "The sender was banned yesterday.", "S31 and SC-1 are ours.",
                  "banned sending IPs are a pity"):
        ex = extract(pasted(words + "\n"))
        assert ex.primary is None and ex.inferred is None, words


def test_a_fragment_in_the_returned_original_is_not_read() -> None:
    body = ("This is the mail system at host mail.sender.example.\n\n<bob@example.com>: connection timed out\n\n"
            "------ This is a copy of the message, including all the headers. ------\n\n"
            "Subject: our IP\n\nAccess denied, banned sending IP [203.0.113.7]\n")
    assert extract(pasted(body)).primary is None


def test_fragments_repeated_a_million_times_stay_linear_and_bounded() -> None:
    for junk in ("banned sending IP [203.0.113.7] " * 60_000, "banned sendin " * 150_000,
                 "Access denied, banned sender[" * 60_000, ("x" * 70 + "\n") * 30_000 + "S3150\n"):
        start = time.perf_counter()
        ex = extract(pasted(junk))
        assert time.perf_counter() - start < 2.0, junk[:30]
        assert len(ex.findings) <= MAX_FRAGMENTS
