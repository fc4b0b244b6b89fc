"""The test servers themselves: each fixture starts, answers, isolates and stops."""

from __future__ import annotations

import smtplib

import pytest
import sqlalchemy
from servers import DROP, DovecotMailbox, SMTPServer

RAW = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: desk@example.net\r\n"
    b"Subject: =?utf-8?q?d=C3=A9list?=\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"line one\r\n"
    b".leading dot\r\n"
    b"\r\n"
)


def test_append_then_fetch_is_byte_identical(dovecot: DovecotMailbox) -> None:
    uid = dovecot.append(RAW, flags=["\\Flagged"])

    assert dovecot.uids("INBOX") == [uid]
    assert dovecot.fetch_raw("INBOX", uid) == RAW
    assert dovecot.flags("INBOX", uid) == {"\\Flagged"}  # the fetch did not set \Seen


def test_folders_and_client(dovecot: DovecotMailbox) -> None:
    dovecot.create_folder("Invalid")
    uid = dovecot.append(RAW, folder="Invalid")

    imap = dovecot.client()
    imap.select_folder("Invalid")
    imap.add_flags([uid], [b"\\Seen"])

    assert set(dovecot.folders()) == {"INBOX", "Invalid"}
    assert dovecot.flags("Invalid", uid) == {"\\Seen"}


def test_capabilities_include_move_idle_uidplus(dovecot: DovecotMailbox) -> None:
    capabilities = set(dovecot.client().capabilities())

    assert {b"MOVE", b"IDLE", b"UIDPLUS"} <= capabilities


def test_imaps_with_the_self_signed_certificate(dovecot: DovecotMailbox) -> None:
    imap = dovecot.client(use_ssl=True)

    assert imap.select_folder("INBOX")[b"EXISTS"] == 0
    assert dovecot.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize("n", [1, 2])
def test_each_test_gets_an_empty_mailbox(dovecot: DovecotMailbox, n: int) -> None:
    assert dovecot.uids() == []
    dovecot.append(RAW)
    assert len(dovecot.uids()) == 1


def test_two_mailboxes_in_one_test_are_separate(dovecot: DovecotMailbox) -> None:
    other = DovecotMailbox(dovecot.server)
    try:
        dovecot.append(RAW)
        assert other.uids() == []
        assert other.user != dovecot.user
    finally:
        other.close()


def test_doveadm_uid_validity_change_is_visible(dovecot: DovecotMailbox) -> None:
    dovecot.append(RAW)

    dovecot.set_uid_validity(4242)

    assert dovecot.client().select_folder("INBOX")[b"UIDVALIDITY"] == 4242
    assert "uidvalidity=4242" in dovecot.doveadm(
        "mailbox", "status", "-u", dovecot.user, "uidvalidity", "INBOX"
    )


def test_restart_keeps_mail_and_cuts_connections(dovecot: DovecotMailbox) -> None:
    uid = dovecot.append(RAW)
    before = dovecot.client()
    before.select_folder("INBOX")

    dovecot.restart_server()

    with pytest.raises((OSError, before.AbortError)):
        before.noop()
    assert dovecot.client().select_folder("INBOX")[b"EXISTS"] == 1
    assert dovecot.fetch_raw("INBOX", uid) == RAW


def test_smtp_receives_exact_bytes(smtp_server: SMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.sendmail("bot@example.net", ["alice@example.org"], RAW)

    [received] = smtp_server.wait_for(1)
    assert received.data == RAW
    assert received.mail_from == "bot@example.net"
    assert received.rcpt_tos == ["alice@example.org"]
    assert received.message["Subject"] == "délist"


def test_smtp_auth(smtp_server: SMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(smtp_server.user, "wrong")
        client.login(smtp_server.user, smtp_server.password)
        client.sendmail("bot@example.net", ["alice@example.org"], RAW)

    assert smtp_server.wait_for(1)[0].auth_login == smtp_server.user


def test_smtp_scripted_451_then_250(smtp_server: SMTPServer) -> None:
    smtp_server.data_responses.extend(["451 4.3.0 try later", "250 OK queued"])

    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("bot@example.net", ["alice@example.org"], RAW)
        client.sendmail("bot@example.net", ["alice@example.org"], RAW)

    assert refused.value.smtp_code == 451
    assert [a.reply for a in smtp_server.attempts] == ["451 4.3.0 try later", "250 OK queued"]
    assert len(smtp_server.wait_for(1)) == 1


def test_smtp_scripted_rcpt_550(smtp_server: SMTPServer) -> None:
    smtp_server.rcpt_responses.append("550 5.1.1 no such user")

    with (
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.sendmail("bot@example.net", ["nobody@example.org"], RAW)

    assert refused.value.recipients["nobody@example.org"][0] == 550
    assert smtp_server.attempts == []


def test_smtp_drop_after_data(smtp_server: SMTPServer) -> None:
    smtp_server.data_responses.append(DROP)

    client = smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("bot@example.net", ["alice@example.org"], RAW)
    finally:
        client.close()

    assert [a.reply for a in smtp_server.attempts] == [DROP]
    assert smtp_server.messages == []


def test_database_url_connects(database_url: str) -> None:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
