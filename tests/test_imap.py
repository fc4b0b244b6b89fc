"""The IMAP source against a real Dovecot: batches, cursors, UIDVALIDITY,
servers without MOVE, and errors an operator can act on."""

from __future__ import annotations

import logging

import pytest
from app import World, corpus, imap_config, sample

from mailbot.app import Desk
from mailbot.source.base import SourceError
from mailbot.source.imap import ImapSession

S01 = "forwards/found/s01-postfix-511-v4/{}.eml"


def test_messages_are_fetched_in_batches_and_the_cursor_remembers_the_last_uid(make_world) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world(mailbox={"batch_size": 2})
    for style in ("fwd_attach", "outlook_inline", "gmail_inline", "apple_inline", "html_only"):
        w.deliver(corpus(S01.format(style)))
    polled, _ = w.run()
    assert polled.fetch.stored == 5 and polled.process.processed == 5
    assert sorted(m.uid for m in w.messages()) == [1, 2, 3, 4, 5]
    w.deliver(sample("04-no-code.eml"))
    polled, _ = w.run()
    assert polled.fetch.stored == 1 and w.messages()[-1].uid == 6


def test_without_move_the_message_stays_and_is_flagged_seen_and_mailbot(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    original_init = ImapSession.__init__

    def no_move(self: ImapSession, *a: object, **kw: object) -> None:
        original_init(self, *a, **kw)  # type: ignore[arg-type]
        self.can_move = False

    monkeypatch.setattr(ImapSession, "__init__", no_move)
    uid = world.deliver(sample("01-banned-sender-attached.eml"))
    world.run()
    assert world.imap.uids("INBOX") == [uid]
    assert {"\\Seen", "$Mailbot"} <= world.imap.flags("INBOX", uid)
    polled, _ = world.run()
    assert polled.fetch.stored == 0 and polled.fetch.duplicates == 0
    assert len(world.smtp.messages) == 1


def test_a_uidvalidity_reset_opens_no_second_ticket_and_sends_no_second_reply(
        make_world, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world()
    original_init = ImapSession.__init__

    def no_move(self: ImapSession, *a: object, **kw: object) -> None:
        original_init(self, *a, **kw)  # type: ignore[arg-type]
        self.can_move = False

    # Without MOVE the message stays in INBOX, so after the reset it is seen again under a new UID.
    monkeypatch.setattr(ImapSession, "__init__", no_move)
    uid = w.deliver(sample("01-banned-sender-attached.eml"))
    w.run()
    before = w.imap.uid_validity()
    with w.imap.client() as c:
        c.select_folder("INBOX")
        c.remove_flags([uid], [b"$Mailbot"])  # as if the flag was lost with the reset
    w.imap.set_uid_validity(before + 100)

    with caplog.at_level(logging.WARNING, logger="mailbot.source.fetch"):
        polled, _ = w.run()
    assert polled.fetch.stored == 0 and polled.fetch.duplicates == 1
    assert len(w.tickets()) == 1 and len(w.smtp.messages) == 1
    warning = next(r.getMessage() for r in caplog.records if "UIDVALIDITY" in r.getMessage())
    assert w.desk.config.mailbox.user in warning and str(before) in warning and str(before + 100) in warning


def test_a_refused_login_names_the_server_and_user_but_not_the_password(
        tmp_path, dovecot, smtp_server, database_url) -> None:  # type: ignore[no-untyped-def]
    config = imap_config(tmp_path, dovecot, smtp_server, database_url, mailbox={"password": "wrong-secret"})
    desk = Desk(config)
    with pytest.raises(SourceError) as e:
        desk.poll()
    message = str(e.value)
    assert f"{dovecot.host}:{dovecot.port}" in message and dovecot.user in message
    assert "login refused" in message and "wrong-secret" not in message
    desk.engine.dispose()


def test_an_unreachable_server_is_named(tmp_path, dovecot, smtp_server, database_url) -> None:  # type: ignore[no-untyped-def]
    from servers import free_port

    port = free_port()
    desk = Desk(imap_config(tmp_path, dovecot, smtp_server, database_url, mailbox={"port": port}))
    with pytest.raises(SourceError, match=rf"127\.0\.0\.1:{port}.*cannot connect"):
        desk.poll()
    desk.engine.dispose()


def test_tls_with_a_self_signed_certificate_is_refused_unless_trusted(
        tmp_path, dovecot, smtp_server, database_url) -> None:  # type: ignore[no-untyped-def]
    tls = {"port": dovecot.ssl_port, "security": "tls"}
    desk = Desk(imap_config(tmp_path, dovecot, smtp_server, database_url, mailbox=tls))
    with pytest.raises(SourceError, match=r"certificate|TLS"):
        desk.poll()
    desk.engine.dispose()
    trusted = Desk(imap_config(tmp_path, dovecot, smtp_server, database_url,
                               mailbox={**tls, "ca_file": str(dovecot.cert_path)}))
    dovecot.append(sample("01-banned-sender-attached.eml"))
    polled = trusted.poll()
    assert polled.fetch.stored == 1
    trusted.engine.dispose()


def test_backfill_takes_older_mail_from_another_folder_once(world: World) -> None:
    from datetime import date

    world.imap.create_folder("Old requests")
    world.imap.append(sample("01-banned-sender-attached.eml"), folder="Old requests")
    world.imap.append(sample("06-ipv6-thunderbird.eml"), folder="Old requests")
    r = world.desk.backfill(date(2000, 1, 1), "Old requests")
    world.desk.flush()
    assert (r.fetch.stored, r.process.processed) == (2, 2)
    assert len(world.tickets()) == 2 and len(world.smtp.wait_for(2)) == 2
    assert world.imap.uids("Old requests") == [] and len(world.imap.uids("Processed")) == 2

    world.imap.append(sample("01-banned-sender-attached.eml"), folder="Old requests")  # the same mail again
    again = world.desk.backfill(date(2000, 1, 1), "Old requests")
    assert (again.fetch.stored, again.fetch.duplicates) == (0, 1)
    assert len(world.tickets()) == 2
