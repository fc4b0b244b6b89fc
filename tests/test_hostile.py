"""Hostile and broken mail at a public address.

Each case lands in Dovecot followed by an ordinary forward. After one poll
the hostile message has a clear outcome (processed with a ticket, or
quarantined with its reason), its bytes are stored exactly as the server
holds them, nothing raised out of the poll, and the next message was
processed and acknowledged. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import mailbox
import signal
import time
from email import message_from_bytes

from app import DOC_RANGES, World, forward, imap_toml, mailbot_cli
from sqlmodel import Session, col, select

from mailbot.app import Desk
from mailbot.config import parse
from mailbot.store.tables import StoredMessage, Ticket, TicketEvent

NEXT_SENDER = "next@after.example"


def mail(headers: str, body: bytes = b"Please delist us.\r\n") -> bytes:
    """A message from `headers` (one per line, CRLF added) and `body`."""
    head = "".join(f"{line}\r\n" for line in headers.strip().splitlines())
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


PLAIN = """
From: Dana Ops <dana.ops@mailops.example>
To: delist@example.org
Message-ID: <hostile-1@mailops.example>
Date: Tue, 03 Jun 2025 11:24:03 +0000
"""


def run_with_next(world: World, hostile: bytes) -> StoredMessage:
    """Deliver `hostile` then an ordinary forward, poll once; the hostile message's row."""
    world.deliver(hostile)
    world.deliver(forward("198.51.100.99", "next-1", NEXT_SENDER))
    started = time.monotonic()
    world.run()
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"one poll took {elapsed:.0f}s"

    row, after = world.messages()
    assert after.state == "processed" and after.ticket_id is not None
    assert any(r.rcpt_tos == [NEXT_SENDER] for r in world.smtp.wait_for(1))
    assert world.imap.uids("INBOX") == []
    folder = "Processed" if row.state == "processed" else "Quarantine"
    on_server = [world.imap.fetch_raw(folder, uid) for uid in world.imap.uids(folder)]
    if row.truncated:
        assert any(raw.startswith(row.raw) for raw in on_server)
    else:
        assert row.raw in on_server  # byte-identical to the server's BODY[]
    return row


def replies_to(world: World, address: str) -> list[object]:
    return [r for r in world.smtp.messages if address in r.rcpt_tos]


def nested_2000() -> bytes:
    inner = b"From: x@y.example\r\nSubject: leaf\r\n\r\n550 5.7.511 banned sender[203.0.113.9]\r\n"
    for _ in range(2000):
        inner = b"Subject: level\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    return mail(PLAIN + "Subject: nested\nMIME-Version: 1.0\nContent-Type: message/rfc822", inner)


def encoded_words_32000() -> bytes:
    return mail(PLAIN + "Subject: " + " ".join(["=?UTF-8?Q?a?="] * 32000))


def broken_to() -> bytes:
    return forward("203.0.113.7", "broken-to", "ann@one.example").replace(b"To: delist@example.org\n", b'To: "\n', 1)


def outlook_message_id() -> bytes:
    return forward("203.0.113.7", "x", "ann@one.example").replace(b"<x@forwarder.example>", b"<[abc==@microsoft.com]>")


def huge_50_mb() -> bytes:
    blob = base64.encodebytes(bytes(range(256)) * (38 * 1024 * 1024 // 256))
    return mail(PLAIN + "Subject: huge\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"",
                b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + blob.replace(b"\n", b"\r\n") + b"--b--\r\n")


def bcc_in_subject() -> bytes:
    return forward("203.0.113.7", "inject-1", "ann@one.example").replace(
        b"Subject: Fwd: Undelivered Mail Returned to Sender", b"Subject: =?UTF-8?Q?x=0ABcc:_victim@example.org?=", 1)


def ambiguous_from() -> bytes:
    return forward("203.0.113.7", "ambiguous-1", "x@x.example").replace(
        b"From: Dana Ops <x@x.example>", b"From: alice@example.org)<bob@example.org>", 1)


def markup_subject() -> bytes:
    return forward("203.0.113.7", "script-1", "ann@one.example").replace(
        b"Subject: Fwd: Undelivered Mail Returned to Sender",
        b"Subject: <script>alert(1)</script> [bold red]x[/bold red] \x1b[31mred", 1)


def test_2000_nested_messages_are_read_to_a_depth_and_get_a_needs_info_ticket(world: World) -> None:
    row = run_with_next(world, nested_2000())

    assert row.state == "processed"
    ticket = next(t for t in world.tickets() if t.id == row.ticket_id)
    assert ticket.state == "needs_info"
    notes = json.loads(row.findings or "{}").get("notes", [])
    assert any("nesting too deep" in n for n in notes), notes


def test_a_subject_of_32000_encoded_words_is_quarantined_with_its_reason(world: World) -> None:
    row = run_with_next(world, encoded_words_32000())

    assert row.state == "quarantined"
    assert row.outcome is not None and "cap" in row.outcome and "header" in row.outcome
    assert len(world.tickets()) == 1  # only the next message's


def test_a_broken_to_header_does_not_matter(world: World) -> None:
    raw = broken_to()
    assert b'To: "\n' in raw
    row = run_with_next(world, raw)

    assert row.state == "processed"
    assert [r.rcpt_tos for r in replies_to(world, "ann@one.example")] == [["ann@one.example"]]


def test_outlooks_bracketed_message_id_is_kept_as_written_and_never_copied_into_a_header(world: World) -> None:
    row = run_with_next(world, outlook_message_id())

    assert (row.state, row.message_id) == ("processed", "<[abc==@microsoft.com]>")
    [ack] = replies_to(world, "ann@one.example")
    assert ack.message["In-Reply-To"] is None  # not a valid msg-id: refused, not repaired
    # a reply quoting it still finds the ticket
    world.deliver(mail("""
From: ann@one.example
To: delist@example.org
Subject: any news?
Message-ID: <news-1@one.example>
In-Reply-To: <[abc==@microsoft.com]>
"""))
    world.run()
    assert world.messages()[-1].ticket_id == row.ticket_id


NUL_BODY = (b"--b\r\nContent-Type: text/plain; charset=\"x-no-such-charset\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n!!!! not base64 \x00\x00 ===\r\n"
            b"--b\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n"
            b"Remote server said: 550 5.7.511 Access denied, banned sender[203.0.113.8]\x00 \xff\xfe\r\n"
            b"--b--\r\n")
NUL_HEADERS = ("From: Dana \x00Ops <dana.ops@mailops.example>\nTo: delist@example.org\n"
               "Subject: nul\x00 =?x-unknown?B?////?= \udcff\nMessage-ID: <nul\x00-1@mailops.example>\n"
               "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"")


def test_nul_bytes_an_unknown_charset_and_invalid_base64_are_stored_and_processed(world: World) -> None:
    headers, body = NUL_HEADERS, NUL_BODY
    row = run_with_next(world, mail(headers, body))  # Dovecot stores each NUL as 0x80

    assert row.state == "processed"
    ticket = next(t for t in world.tickets() if t.id == row.ticket_id)
    assert (ticket.status, ticket.ip) == ("5.7.511", "203.0.113.8")


def test_nul_bytes_from_a_maildir_source_are_stored_as_they_are_and_kept_out_of_every_text_column(
        tmp_path, smtp_server, database_url) -> None:  # type: ignore[no-untyped-def]
    # Maildir hands mailbot the file as written: the NUL bytes arrive.
    config = parse({"mailbox": {"source": "maildir", "maildir_path": "inbox"},
                    "outgoing": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port,
                                 "security": "none"},
                    "database": {"url": database_url}, "policy": {"allow_ranges": DOC_RANGES}},
                   base_dir=str(tmp_path), environ={})
    desk = Desk(config)
    try:
        raw = mail(NUL_HEADERS, NUL_BODY)
        inbox = mailbox.Maildir(str(tmp_path / "inbox"), create=True)
        inbox.add(raw)
        inbox.add(forward("198.51.100.99", "next-1", NEXT_SENDER))
        desk.run_once()

        with Session(desk.engine) as s:
            row, after = s.exec(select(StoredMessage).order_by(col(StoredMessage.id))).all()
            ticket = s.get(Ticket, row.ticket_id)
            events = s.exec(select(TicketEvent).where(TicketEvent.ticket_id == row.ticket_id)).all()
        assert row.raw == raw and b"\x00" in row.raw  # the bytes as they came
        assert (row.state, after.state) == ("processed", "processed")
        assert ticket is not None and (ticket.status, ticket.ip) == ("5.7.511", "203.0.113.8")
        texts = [row.subject, row.sender, row.outcome, row.message_id, row.identity, row.findings, ticket.text,
                 ticket.subject, ticket.sender, *(e.detail for e in events)]
        assert not [t for t in texts if t and "\x00" in t]
        # a NUL in From is not plainly one address: no reply to it, the next sender gets theirs
        assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [[NEXT_SENDER]]
    finally:
        desk.engine.dispose()


def test_a_50_mb_message_is_quarantined_from_its_headers_without_fetching_the_body(world: World) -> None:
    raw = huge_50_mb()
    assert len(raw) > 50 * 1024 * 1024
    row = run_with_next(world, raw)

    assert (row.state, row.truncated, row.size) == ("quarantined", True, len(raw))
    assert len(row.raw) < 4096 and b"Subject: huge" in row.raw
    assert row.outcome == (f"quarantined: message is {len(raw)} bytes, over the cap of 26214400 "
                           "(mailbox.max_message_bytes)")


def test_the_size_cap_is_configurable(make_world) -> None:  # type: ignore[no-untyped-def]
    world = make_world(mailbox={"max_message_bytes": 100_000})
    row = run_with_next(world, mail(PLAIN + "Subject: big", b"x" * 200_000 + b"\r\n"))
    assert (row.state, row.truncated) == ("quarantined", True)
    assert "over the cap of 100000" in (row.outcome or "")


def attachment(ctype: str, name: str, data: bytes) -> bytes:
    return mail(PLAIN + "Subject: Fwd: undeliverable\nMIME-Version: 1.0\n"
                        "Content-Type: multipart/mixed; boundary=\"b\"",
                b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
                + f"--b\r\nContent-Type: {ctype}; name=\"{name}\"\r\n"
                  f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
                  "Content-Transfer-Encoding: base64\r\n\r\n".encode()
                + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--b--\r\n")


def test_a_truncated_winmail_dat_gets_a_needs_info_ticket(world: World) -> None:
    tnef = b"\x78\x9f\x3e\x22\x01\x00\x01\x06\x90\x08\x00\x04\x00\x00\x00\x00\x00\x01\x00"
    row = run_with_next(world, attachment("application/ms-tnef", "winmail.dat", tnef))
    assert row.state == "processed"
    assert next(t for t in world.tickets() if t.id == row.ticket_id).state == "needs_info"
    assert replies_to(world, "dana.ops@mailops.example")


def test_a_msg_that_is_not_ole_gets_a_needs_info_ticket(world: World) -> None:
    row = run_with_next(world, attachment("application/vnd.ms-outlook", "ndr.msg", b"not an OLE file at all" * 40))
    assert row.state == "processed"
    assert next(t for t in world.tickets() if t.id == row.ticket_id).state == "needs_info"
    assert replies_to(world, "dana.ops@mailops.example")


def test_a_subject_hiding_a_bcc_header_cannot_add_a_recipient_or_a_header(world: World) -> None:
    row = run_with_next(world, bcc_in_subject())

    assert row.state == "processed"
    [ack] = replies_to(world, "ann@one.example")
    assert ack.rcpt_tos == ["ann@one.example"]
    parsed = message_from_bytes(ack.data)
    assert len(parsed.get_all("Subject") or []) == 1
    assert parsed.get_all("Bcc") is None and parsed.get_all("Cc") is None
    assert b"\r\nBcc:" not in ack.data.split(b"\r\n\r\n", 1)[0]
    assert not any("victim" in r for got in world.smtp.attempts for r in got.rcpt_tos)


def test_an_ambiguous_from_gets_no_reply_to_either_address(world: World) -> None:
    row = run_with_next(world, ambiguous_from())

    assert row.state == "processed"
    ticket = next(t for t in world.tickets() if t.id == row.ticket_id)
    assert ticket.state == "open"
    everyone = {r for got in world.smtp.attempts for r in got.rcpt_tos}
    assert everyone == {NEXT_SENDER}
    assert any(e.kind == "no_reply" and "not one plain address" in (e.detail or "") for e in world.events(ticket))


def test_markup_in_a_subject_is_shown_as_text_in_show_and_escaped_in_html_mail(
        world: World, tmp_path, dovecot, smtp_server, database_url) -> None:  # type: ignore[no-untyped-def]
    row = run_with_next(world, markup_subject())
    ticket = next(t for t in world.tickets() if t.id == row.ticket_id)
    assert ticket.subject is not None and "<script>" in ticket.subject

    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    shown = mailbot_cli("-c", str(path), "show", ticket.ref)
    assert shown.returncode == 0, shown.stderr
    assert "<script>alert(1)</script> [bold red]x[/bold red]" in shown.stdout  # text, not markup
    assert "\x1b[31m" not in shown.stdout  # no terminal escapes from mail

    _, _, html = world.desk.render_digest()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html


def test_every_hostile_message_through_the_daemon_gets_an_outcome_and_the_ordinary_mail_flows(
        cli_desk, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """All of the above, with a 700-character Message-ID and a 220-character From, to `mailbot run`
    (SQLite and PostgreSQL): each ends processed or quarantined with its reason, every ordinary forward
    between them is acknowledged, no poll fails and the daemon keeps running."""
    from test_crash import wait_for_line
    from test_one_message import LONG_FROM, LONG_ID

    desk = cli_desk(schedule={"poll_seconds": 1, "flush_seconds": 1})
    w = desk.world
    hostile = [nested_2000(), encoded_words_32000(), broken_to(), outlook_message_id(), mail(NUL_HEADERS, NUL_BODY),
               huge_50_mb(), attachment("application/ms-tnef", "winmail.dat", b"\x78\x9f\x3e\x22\x01\x00" * 3),
               attachment("application/vnd.ms-outlook", "ndr.msg", b"not an OLE file at all" * 40),
               bcc_in_subject(), ambiguous_from(), markup_subject(),
               forward("203.0.113.8", "long-id", "long@one.example").replace(b"<long-id@forwarder.example>",
                                                                              LONG_ID.encode()),
               forward("203.0.113.9", "long-from", LONG_FROM)]
    ordinary = [f"ordinary{i}@s{i}.example" for i in range(len(hostile))]
    for i, raw in enumerate(hostile):
        w.deliver(raw)
        w.deliver(forward(f"198.51.100.{i + 1}", f"ordinary-{i}", ordinary[i]))

    log = tmp_path / "daemon.log"
    proc = desk.start_daemon(log)
    try:
        wait_for_line(log, "mailbot running", 1, proc)
        deadline = time.monotonic() + 120
        while w.imap.uids("INBOX") or len({r.rcpt_tos[0] for r in w.smtp.messages} & set(ordinary)) < len(ordinary):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert proc.poll() is None  # still running
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    text = log.read_text(errors="replace")
    assert "poll failed" not in text and "Traceback" not in text, text[-3000:]
    messages = w.messages()
    assert len(messages) == 2 * len(hostile)
    assert all(m.state in ("processed", "quarantined") and m.outcome for m in messages)
    quarantined = sorted(m.outcome or "" for m in messages if m.state == "quarantined")
    assert len(quarantined) == 2  # the 32,000 encoded words and the 50 MB message, with their reasons
    assert "header" in quarantined[0] and "over the cap of 26214400" in quarantined[1]
    assert LONG_FROM in {r.rcpt_tos[0] for r in w.smtp.messages}
