"""What a sender's follow-up does to their ticket (mailbot/desk/followup.py and the desk's rules).

A closed ticket reopens only on a new rejection; anything else the sender
writes is kept on the ticket and answered once per closing with what would
reopen it, so nobody is left writing into silence.
"""

from __future__ import annotations

from collections.abc import Callable

from app import World, forward

from mailbot.staffing import staff

OWNER = "dana.ops@mailops.example"


def note(ref: str, n: int, body: str = "It still does not work. Urgent!") -> bytes:
    return (f"From: Dana <{OWNER}>\r\nTo: delist@example.org\r\nSubject: Re: [{ref}] blocked\r\n"
            f"Message-ID: <note-{n}@mailops.example>\r\n\r\n{body}\r\n").encode()


def test_a_follow_up_on_a_closed_ticket_is_answered_once_and_leaves_it_closed(
        make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(forward("203.0.113.45", "first", OWNER))
    w.run()
    [ticket] = w.tickets()
    staff.close(w.desk.engine, ticket.ref, "ann", "delisted")

    w.deliver(note(ticket.ref, 1))
    w.deliver(note(ticket.ref, 2))
    w.run()
    [kept] = w.tickets()
    assert kept.state == "closed"
    _ack, closed = w.smtp.wait_for(2)
    assert closed.rcpt_tos == [OWNER]
    assert closed.message["Subject"] == f"[{ticket.ref}] Your request is closed"
    body = " ".join(closed.message.get_body(("plain",)).get_content().split())
    assert "forward the newest rejection notice" in body and "203.0.113.45" in body
    assert closed.message["In-Reply-To"] == "<note-1@mailops.example>"
    w.desk.flush()
    assert len(w.smtp.messages) == 2  # once per closing, not once per note
    assert [e.kind for e in w.events(kept)].count("closed_follow_up") == 2


def test_a_new_rejection_reopens_a_closed_ticket(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(forward("203.0.113.45", "first", OWNER))
    w.run()
    [ticket] = w.tickets()
    staff.close(w.desk.engine, ticket.ref, "ann", None)
    again = forward("203.0.113.45", "again", OWNER).replace(
        b"Subject: Fwd: Undelivered Mail Returned to Sender", f"Subject: [{ticket.ref}] again".encode())
    w.deliver(again)
    w.run()
    [reopened] = w.tickets()
    assert (reopened.state, reopened.clock) == ("open", 2)


def test_an_out_of_office_reply_to_staffs_answer_does_not_reopen_the_ticket(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(forward("203.0.113.45", "first", OWNER))
    w.run()
    [ticket] = w.tickets()
    staff.answer(w.desk.engine, ticket.ref, "ann", "delisted, told them")
    w.deliver(("Auto-Submitted: auto-replied\r\n" + note(ticket.ref, 3, "I am out of the office until Monday.")
               .decode()).encode())
    w.run()
    [kept] = w.tickets()
    assert kept.state == "answered"
    [msg] = [m for m in w.messages() if m.message_id == "<note-3@mailops.example>"]
    assert msg.outcome is not None and "automatic" in msg.outcome
    assert len(w.smtp.wait_for(1)) == 1  # the first ack only
