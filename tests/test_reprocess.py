"""Reprocessing stored mail after a parser improvement: tickets catch up,
nothing is sent twice."""

from __future__ import annotations

import pytest
from app import World, sample
from sqlmodel import Session

from mailbot.desk.reprocess import reprocess, selection
from mailbot.extraction import Extraction


def test_a_needs_info_ticket_moves_on_when_the_better_parser_reads_it(world: World,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(world.desk.processor, "extract", lambda raw: Extraction())  # the old parser read nothing
        world.deliver(sample("01-banned-sender-attached.eml"))
        world.deliver(sample("04-no-code.eml"))
        world.run()
    assert [t.state for t in world.tickets()] == ["needs_info", "needs_info"]
    assert len(world.smtp.wait_for(2)) == 2

    with Session(world.desk.engine) as s:
        ids = selection(s, None, None)
    r = reprocess(world.desk.engine, world.desk.processor.triage, ids)
    world.desk.flush()
    assert (r.messages, r.tickets_updated) == (2, 1)
    first, second = world.tickets()
    assert (first.state, first.status, first.ip, second.state) == ("open", "5.7.511", "203.0.113.45", "needs_info")
    ack = world.smtp.wait_for(3)[2].message
    assert ack["Subject"].startswith("[DL-000001] Delisting request received")

    again = reprocess(world.desk.engine, world.desk.processor.triage, ids)
    world.desk.flush()
    assert (again.changed, again.tickets_updated) == (0, 0)
    assert len(world.smtp.messages) == 3
