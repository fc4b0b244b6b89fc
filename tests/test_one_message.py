"""One message never stops the desk: no column length, and no database error
one message's data causes, decides whether mail is processed.

On SQLite and PostgreSQL (PostgreSQL enforces lengths; SQLite never did),
through the command line an operator runs.
"""

from __future__ import annotations

from collections.abc import Callable

from app import World, forward
from sqlalchemy import text
from sqlmodel import Session, select
from test_crash import CliDesk, cli_desk  # noqa: F401  (the fixture)

from mailbot.models import StoredMessage

LONG_ID = "<" + "x" * (700 - len("<@forwarder.example>")) + "@forwarder.example>"
# valid: a 60-character local part, labels under 64 characters
LONG_FROM = "l" * 60 + "@" + "d" * 50 + "." + "e" * 50 + "." + "f" * 49 + ".example"


def test_a_700_character_message_id_and_a_220_character_from_are_processed_and_acknowledged(
        cli_desk: Callable[..., CliDesk]) -> None:
    assert (len(LONG_ID), len(LONG_FROM)) == (700, 220)
    desk = cli_desk()
    w = desk.world
    long_id = forward("203.0.113.10", "long-id", "ann@one.example").replace(
        b"<long-id@forwarder.example>", LONG_ID.encode())
    w.deliver(long_id)
    w.deliver(forward("203.0.113.20", "long-from", LONG_FROM))
    w.deliver(forward("203.0.113.30", "next-1", "bob@two.example"))

    polled = desk.poll_once()
    assert polled.returncode == 0, polled.stderr
    assert "Traceback" not in polled.stderr and "quarantined 0" in polled.stdout

    messages = w.messages()
    assert [m.state for m in messages] == ["processed"] * 3
    assert messages[0].message_id == LONG_ID  # whole, as written
    by_ip = {t.ip: t for t in w.tickets()}
    assert set(by_ip) == {"203.0.113.10", "203.0.113.20", "203.0.113.30"}
    assert by_ip["203.0.113.20"].sender == LONG_FROM
    assert LONG_FROM in {e.actor for e in w.events(by_ip["203.0.113.20"])}
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(3)) == sorted(["ann@one.example", LONG_FROM,
                                                                         "bob@two.example"])
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 3

    # the same mail again is recognised by its (hashed) identity; a reply quoting the long id finds its ticket
    w.deliver(long_id)
    w.deliver(b"From: ann@one.example\r\nTo: delist@example.org\r\nSubject: any news?\r\n"
              b"Message-ID: <news-1@one.example>\r\nIn-Reply-To: " + LONG_ID.encode() + b"\r\n\r\nHello?\r\n")
    again = desk.poll_once()
    assert again.returncode == 0, again.stderr
    assert len(w.tickets()) == 3 and len(w.messages()) == 4
    assert w.messages()[-1].ticket_id == by_ip["203.0.113.10"].id


REFUSED_BODY = b"REFUSED-BY-THE-DATABASE"


def refuse_at_insert(world: World) -> None:
    """A real database refusal of one message's data: a trigger refusing a Message-ID, and any bytes
    holding REFUSED_BODY (PostgreSQL and SQLite raise their own errors, as for a value too long)."""
    marker = REFUSED_BODY.hex()
    with world.desk.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"""
                CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN
                  IF NEW.message_id LIKE '%refused-id%' THEN RAISE EXCEPTION 'message_id refused'; END IF;
                  IF position('\\x{marker}'::bytea in NEW.raw) > 0 THEN RAISE EXCEPTION 'raw refused'; END IF;
                  RETURN NEW; END $$ LANGUAGE plpgsql"""))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON message FOR EACH ROW EXECUTE FUNCTION refuse()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse_id BEFORE INSERT ON message WHEN NEW.message_id LIKE "
                              "'%refused-id%' BEGIN SELECT RAISE(ABORT, 'message_id refused'); END"))
            conn.execute(text(f"CREATE TRIGGER refuse_raw BEFORE INSERT ON message WHEN instr(NEW.raw, X'{marker}') "
                              "> 0 BEGIN SELECT RAISE(ABORT, 'raw refused'); END"))


def test_a_message_the_database_refuses_is_stored_without_the_field_or_quarantined_after_three_polls(
        world: World) -> None:
    refuse_at_insert(world)
    world.deliver(forward("203.0.113.10", "refused-id", "ann@one.example"))
    world.deliver(forward("203.0.113.20", "refused-body", "eve@three.example") + REFUSED_BODY + b"\n")
    world.deliver(forward("203.0.113.30", "next-1", "bob@two.example"))

    for poll in (1, 2, 3):
        polled, _ = world.run()  # raises nothing
        assert polled.fetch.failed == 1, poll
    assert polled.process.quarantined == 1

    with Session(world.desk.engine) as s:
        rows = {m.uid: m for m in s.exec(select(StoredMessage)).all()}
        first, second, third = (rows[u] for u in sorted(rows))
    # the refused Message-ID: stored without it (identified by its content), processed, answered
    assert (first.state, first.message_id, first.identity[:7]) == ("processed", None, "sha256:")
    assert b"<refused-id@forwarder.example>" in first.raw  # the bytes are whole
    # the refused bytes: counted against the UID, quarantined with the database's reason, kept on the server
    assert second.state == "quarantined" and second.message_id == "<refused-body@forwarder.example>"
    assert second.outcome is not None and second.outcome.startswith("quarantined: fetching failed 3 times: ")
    assert "raw refused" in second.outcome
    assert third.state == "processed"
    assert world.imap.uids("INBOX") == [] and len(world.imap.uids("Quarantine")) == 1
    assert sorted(r.rcpt_tos[0] for r in world.smtp.wait_for(2)) == ["ann@one.example", "bob@two.example"]
