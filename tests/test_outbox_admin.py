"""`mailbot outbox` shows what waits or failed; `mailbot outbox retry` sends failed mail again."""

from __future__ import annotations

import json
from collections.abc import Callable

from app import forward
from test_sending import Senders, senders  # noqa: F401  (the fixture)


def test_outbox_lists_failed_and_queued_mail_and_retry_requeues_it_as_a_ticket_event(
        senders: Callable[..., Senders]) -> None:  # noqa: F811
    s = senders()
    w = s.world
    # the server's answer is remote text: it must reach the terminal without its escape sequences
    w.smtp.rcpt_responses.append("550 5.1.1 \x1b[2J\x1b]0;pwned\x07no such user")
    s.queue_acks(3)
    r = w.desk.flush()
    assert (r.sent, r.failed) == (2, 1)
    w.deliver(forward("203.0.113.99", "late-1", "late.sender@s9.example"))
    w.desk.poll()  # one more acknowledgement, queued and not sent yet

    listed = s.cli("outbox")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    lines = listed.stdout.splitlines()
    [failed] = [ln for ln in lines if ln.split()[1:2] == ["failed"]]
    assert "DL-000001" in failed and "sender0@s0.example" in failed and "550 5.1.1" in failed
    assert "no such user" in failed
    [queued] = [ln for ln in lines if ln.split()[1:2] == ["queued"]]
    assert "DL-000004" in queued and "late.sender@s9.example" in queued and "due now" in queued
    assert not any("sender1@" in ln or "sender2@" in ln for ln in lines)  # sent mail is not listed
    assert lines[-1].startswith("in all: 1 queued, 1 failed, 0 bounced; send failed mail again with")

    as_json = json.loads(s.cli("outbox", "--state", "failed", "--json").stdout)
    assert [(m["ticket"], m["to"], m["state"], m["attempts"]) for m in as_json] == [
        ("DL-000001", "sender0@s0.example", "failed", 1)]
    assert "550 5.1.1" in as_json[0]["error"] and as_json[0]["age_seconds"] >= 0
    assert "no outgoing mail matches" in s.cli("outbox", "--ticket", "DL-000002").stdout
    assert "late.sender@s9.example" in s.cli("outbox", "--recipient", "LATE.sender").stdout
    assert "sender0@s0.example" not in s.cli("outbox", "--older-than", "1").stdout

    nothing = s.cli("outbox", "retry")
    assert nothing.returncode == 1 and "say which failed mail" in nothing.stderr
    sent_id = next(o.id for o in w.outbox() if o.state == "sent")
    refused = s.cli("outbox", "retry", str(sent_id))
    assert refused.returncode == 1 and f"mail {sent_id} to sender1@s1.example is sent, not failed" in refused.stderr

    retried = s.cli("outbox", "retry", "--ticket", "DL-000001")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith("requeued 1: ") and "sent 2," in retried.stdout
    assert sorted(m.rcpt_tos[0] for m in w.smtp.messages) == [
        "late.sender@s9.example", "sender0@s0.example", "sender1@s1.example", "sender2@s2.example"]
    assert all(o.state == "sent" for o in w.outbox())
    ticket = w.tickets()[0]
    assert ticket.acked_at is not None
    [event] = [e for e in w.events(ticket) if e.kind == "mail_requeued"]
    assert event.actor.endswith("(command line)") and "it had failed: " in (event.detail or "")
    assert s.cli("outbox", "retry", "--all").returncode == 1  # nothing failed any more
