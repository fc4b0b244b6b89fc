"""Faults in processing: a poison message cannot stall the mailbox.

A message whose processing raises is retried on the next polls and, after
three failed attempts, quarantined: moved to the Quarantine folder on the
server, its raw bytes kept, its row saying why. The messages after it are
processed meanwhile.
"""

from __future__ import annotations

import pytest
from app import World, forward

from mailbot.desk import worker as process


@pytest.fixture
def poison_extraction(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extraction raises for any message whose bytes hold "poison"."""
    real = world.desk.processor.extract

    def extract(raw: bytes) -> process.Extraction:
        if b"poison" in raw:
            raise RuntimeError("the parser exploded")
        return real(raw)

    monkeypatch.setattr(world.desk.processor, "extract", extract)


@pytest.mark.usefixtures("poison_extraction")
def test_a_message_whose_processing_raises_is_retried_then_quarantined_and_the_next_is_processed(
        world: World) -> None:
    world.deliver(forward("203.0.113.10", "poison-1", "ann@one.example"))
    world.deliver(forward("203.0.113.20", "healthy-1", "bob@two.example"))

    polled, _ = world.run()
    assert (polled.process.processed, polled.process.failed_attempts, polled.process.quarantined) == (1, 1, 0)
    [ticket] = world.tickets()
    assert ticket.ip == "203.0.113.20" and world.smtp.wait_for(1)[0].rcpt_tos == ["bob@two.example"]
    assert len(world.imap.uids("INBOX")) == 1 and len(world.imap.uids("Processed")) == 1

    polled, _ = world.run()  # attempt 2: still waiting in the inbox
    assert (polled.process.failed_attempts, polled.process.quarantined) == (1, 0)
    assert len(world.imap.uids("INBOX")) == 1

    polled, _ = world.run()  # attempt 3: quarantined
    assert (polled.process.failed_attempts, polled.process.quarantined) == (1, 1)
    stored = next(m for m in world.messages() if m.message_id == "<poison-1@forwarder.example>")
    assert (stored.state, stored.attempts, stored.ticket_id) == ("quarantined", 3, None)
    assert stored.outcome == "quarantined: processing failed 3 times: RuntimeError: the parser exploded"
    assert world.imap.uids("INBOX") == [] and len(world.imap.uids("Quarantine")) == 1
    assert world.imap.fetch_raw("Quarantine", world.imap.uids("Quarantine")[0]) == stored.raw  # kept, whole
    assert b"<poison-1@forwarder.example>" in stored.raw

    polled, flushed = world.run()  # and then it is left alone
    assert (polled.fetch.stored, polled.process.failed_attempts, polled.process.quarantined, flushed.sent) == (
        0, 0, 0, 0)
    assert len(world.tickets()) == 1 and len(world.smtp.messages) == 1


@pytest.mark.usefixtures("poison_extraction")
def test_a_batch_redone_one_by_one_counts_its_tickets_once_in_the_metrics(world: World) -> None:
    from mailbot import metrics

    def opened() -> float:
        return metrics.REGISTRY.get_sample_value("mailbot_tickets_opened_total", {"family": "5.7.511"}) or 0.0

    before = opened()
    # the healthy message comes first: it is handled inside the batch, rolled back with it, then redone
    world.deliver(forward("203.0.113.20", "healthy-1", "bob@two.example"))
    world.deliver(forward("203.0.113.10", "poison-1", "ann@one.example"))
    polled, _ = world.run()
    assert (polled.process.processed, polled.process.failed_attempts) == (1, 1)
    assert len(world.tickets()) == 1
    assert opened() - before == 1
