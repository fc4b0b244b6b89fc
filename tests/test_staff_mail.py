"""Staff act by replying (issue #18): command lines at the start of a verified staff mail are
carried out, recorded with the staff address as actor, and confirmed to that staff member in
one mail; from anyone else the same lines are ordinary mail and change nothing."""

from __future__ import annotations

from collections.abc import Callable

from app import World, forward, mailbot_cli

from mailbot.desk.commands import Command, parse

DESK = {"staff": ["ann@example.org"]}
TRUSTED = {"authserv_ids": ["mx.example.org"]}
OWNER = "dana.ops@mailops.example"
VOUCHED = "Authentication-Results: mx.example.org; dmarc=pass header.from=example.org"


def staff_mail(body: str, *, sender: str = "Ann Support <ann@example.org>", headers: tuple[str, ...] = (VOUCHED,),
               ref: str = "DL-000001", n: int = 1) -> bytes:
    head = [*headers, f"From: {sender}", "To: delist@example.org", f"Subject: Re: [{ref}] your request",
            f"Message-ID: <cmd-{n}@example.org>", "Date: Mon, 30 Nov 2026 10:00:00 +0000"]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def opened(w: World) -> None:
    w.deliver(forward("203.0.113.45", "own", OWNER))
    w.run()


def test_commands_are_read_only_at_the_start_of_the_staff_member_s_own_words() -> None:
    assert parse("#close fixed their relay\n#note called them\n\nThanks, Ann\n#reopen") == [
        Command("close", "fixed their relay"), Command("note", "called them")]
    assert parse("Hello,\n#close") == []  # after words, a # line is text
    assert parse("#CLOSE\n") == [Command("close", "")]


def test_verified_staff_close_a_ticket_by_mail_and_get_one_confirmation(make_world: Callable[..., World]) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    opened(w)
    w.deliver(staff_mail("#note called them, relay fixed\n#close delisted by hand\n\nAnn\n> quoted #reopen"))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.answered_at) == ("closed", None)  # commands are not an answer to the sender
    kinds = [(e.kind, e.actor) for e in w.events(t)]
    assert ("note", "ann@example.org") in kinds and ("staff_commands", "ann@example.org") in kinds
    close = next(e for e in w.events(t) if e.kind == "state")
    assert (close.to_state, close.actor, close.detail) == ("closed", "ann@example.org", "delisted by hand")
    [confirmation] = [m for m in w.smtp.wait_for(1) if m.rcpt_tos != [OWNER]]
    assert confirmation.rcpt_tos == ["ann@example.org"]  # to the staff member, never to the sender
    assert confirmation.message["Subject"] == "[DL-000001] Done by mail: 2 commands"
    body = " ".join(confirmation.message.get_body(("plain",)).get_content().split())
    assert "#note: note kept on the ticket (staff only)" in body and "#close: DL-000001 closed" in body
    w.desk.flush()
    assert [m.rcpt_tos for m in w.smtp.messages] == [["ann@example.org"]]  # the note never reached the sender


def test_assignment_by_mail_and_what_cannot_be_done_yet_is_said(make_world: Callable[..., World]) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    opened(w)
    w.deliver(staff_mail("#assign me\n#delist\n#frobnicate"))
    w.run()
    [t] = w.tickets()
    assert (t.assignee, t.state) == ("ann@example.org", "open")
    [confirmation] = w.smtp.wait_for(1)
    body = " ".join(confirmation.message.get_body(("plain",)).get_content().split())
    assert "#assign: DL-000001 assigned to ann@example.org" in body
    assert "#delist: not done: no [listing] source is configured" in body
    assert "#frobnicate: not done: unknown command" in body


def test_a_forged_staff_from_with_commands_changes_nothing(make_world: Callable[..., World]) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    opened(w)
    forged = "Authentication-Results: mx.example.org; dmarc=fail header.from=example.org"
    w.deliver(staff_mail("#close\n#assign mallory@evil.example", headers=(forged,)))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.assignee) == ("open", None)
    assert "unverified_staff" in [e.kind for e in w.events(t)]
    w.desk.flush()
    assert w.smtp.messages == []  # no confirmation to anyone


def test_the_sender_writing_a_command_line_only_follows_up(make_world: Callable[..., World]) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    opened(w)
    w.deliver(staff_mail("#close\n#assign me", sender=f"Dana <{OWNER}>", headers=()))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.assignee) == ("open", None)
    assert "follow_up" in [e.kind for e in w.events(t)]


def test_assign_and_note_from_the_command_line(cli_desk: Callable[..., object]) -> None:
    c = cli_desk(desk=DESK)
    c.world.deliver(forward("203.0.113.45", "own", OWNER))  # type: ignore[attr-defined]
    c.world.run()  # type: ignore[attr-defined]
    env = {**c.env(), "MAILBOT_STAFF": "bo@example.org"}  # type: ignore[attr-defined]
    path = str(c.path)  # type: ignore[attr-defined]
    assert mailbot_cli("-c", path, "assign", "DL-000001", "me", env=env).stdout.strip() == \
        "DL-000001 assigned to bo@example.org"
    assert mailbot_cli("-c", path, "note", "DL-000001", "asked Spamhaus too", env=env).returncode == 0
    mine = mailbot_cli("-c", path, "tickets", "--mine", "--json", env=env).stdout
    nobody = mailbot_cli("-c", path, "tickets", "--unassigned", "--json", env=env).stdout
    assert '"DL-000001"' in mine and nobody.strip() == "[]"
    shown = mailbot_cli("-c", path, "show", "DL-000001", env=env).stdout
    assert "asked Spamhaus too" in shown and "assignee: bo@example.org" in shown


def test_delist_and_decline_by_mail_go_through_the_listing_source_once(make_world: Callable[..., World]) -> None:
    from mailbot.app import open_listing
    from mailbot.listing.admin import NewListing, add, parse_network
    from mailbot.staffing import mail_requests

    w = make_world(desk=DESK, replies=TRUSTED, listing={"source": "table"})
    add(w.desk.engine, NewListing(parse_network("203.0.113.45"), category="spam"), "test")
    opened(w)
    w.deliver(staff_mail("#note checked: the relay is closed\n#delist first time, relay fixed"))
    w.run()
    assert mail_requests.run(w.desk.engine, w.desk.staffing, w.desk.listing()) == 0  # done once
    [t] = w.tickets()
    assert (t.outcome, t.state) == ("delisted", "answered")
    assert [e.actor for e in w.events(t) if e.kind == "delist"] == ["ann@example.org"]
    lister = open_listing(w.desk.config, w.desk.engine)
    assert lister is not None and not getattr(lister.lookup("203.0.113.45", fresh=True), "listed", True)
    w.desk.flush()
    to_ann = [m for m in w.smtp.messages if m.rcpt_tos == ["ann@example.org"]]
    to_dana = [m for m in w.smtp.messages if m.rcpt_tos == [OWNER]]
    [confirmation] = to_ann  # one, with both commands' results
    body = " ".join(confirmation.message.get_body(("plain",)).get_content().split())
    assert "#note: note kept on the ticket" in body and f"#delist: DL-000001 delisted; told {OWNER}" in body
    assert len(to_dana) == 1 and "checked: the relay" not in to_dana[0].message.as_string()

    w.deliver(staff_mail("#decline too late", n=2))
    w.run()
    w.desk.flush()
    [_, second] = [m for m in w.smtp.messages if m.rcpt_tos == ["ann@example.org"]]
    assert "#decline: DL-000001 declined" in " ".join(second.message.get_body(("plain",)).get_content().split())


def test_an_escalation_goes_to_the_assignee_and_the_breach_to_everyone(make_world: Callable[..., World]) -> None:
    from datetime import UTC, datetime, timedelta

    import time_machine

    from mailbot.staffing import staff

    w = make_world(desk={"staff": ["support@example.org", "bo@example.org"]})
    with time_machine.travel(datetime(2026, 11, 30, 9, 0, tzinfo=UTC), tick=False) as clock:
        w.deliver(forward("203.0.113.45", "a", OWNER))
        w.deliver(forward("203.0.113.46", "b", "erik@mailops.example"))
        w.run()
        staff.assign(w.desk.engine, "DL-000001", "bo@example.org", "ann")
        clock.shift(timedelta(hours=40))
        assert sorted(w.desk.sweep().escalated) == ["DL-000001", "DL-000002"]  # same due time: any order
        w.desk.flush()
        notices = {tuple(m.rcpt_tos): " ".join(m.message.get_body(("plain",)).get_content().split())
                   for m in w.smtp.messages if "due soon" in str(m.message["Subject"])}
        assert set(notices) == {("bo@example.org",), ("support@example.org", "bo@example.org")}
        assert "DL-000001" in notices[("bo@example.org",)] and "DL-000002" not in notices[("bo@example.org",)]
        assert "DL-000001" not in notices[("support@example.org", "bo@example.org")]
        clock.shift(timedelta(hours=8))
        assert sorted(w.desk.sweep().breached) == ["DL-000001", "DL-000002"]
        w.desk.flush()
    [breach] = [m for m in w.smtp.messages if "past the" in str(m.message["Subject"])]
    assert breach.rcpt_tos == ["support@example.org", "bo@example.org"]


def test_the_digest_groups_open_tickets_by_assignee_with_the_latest_note(make_world: Callable[..., World]) -> None:
    from mailbot.staffing import staff

    w = make_world(desk={"staff": ["support@example.org"]})
    w.deliver(forward("203.0.113.45", "a", OWNER))
    w.deliver(forward("203.0.113.46", "b", "erik@mailops.example"))
    w.run()
    staff.assign(w.desk.engine, "DL-000002", "bo@example.org", "ann")
    staff.note(w.desk.engine, "DL-000002", "first note", "bo")
    staff.note(w.desk.engine, "DL-000002", "called them back", "bo")
    assert w.desk.send_digest("2026-11-30T12:00")
    w.desk.flush()
    [sent] = [m for m in w.smtp.messages if m.rcpt_tos == ["support@example.org"]]
    text = sent.message.get_body(("plain",)).get_content()
    section = text[text.index("OPEN, BY ASSIGNEE"):text.index("NEW SINCE")]
    assert "bo@example.org (1): DL-000002" in section and "nobody (1): DL-000001" in section
    assert "note: called them back" in section and "first note" not in section
    assert "#delist [note]" in section and "#assign <me|address>" in section  # the commands, printed


def test_a_request_left_by_a_stopped_daemon_is_carried_out_by_the_sweep(make_world: Callable[..., World]) -> None:
    import pytest
    from sqlmodel import Session

    from mailbot.staffing import mail_requests

    w = make_world(desk=DESK, replies=TRUSTED)
    opened(w)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mail_requests, "run", lambda *a, **k: 0)  # the daemon stopped before carrying it out
        w.deliver(staff_mail("#decline sends to purchased lists"))
        w.run()
    assert [t.outcome for t in w.tickets()] == [None]
    w.desk.sweep()
    [t] = w.tickets()
    assert t.outcome == "declined"
    with Session(w.desk.engine) as session:
        assert mail_requests.pending(session) == []
