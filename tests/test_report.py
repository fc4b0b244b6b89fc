"""`mailbot report` (issue #18): the figures a desk manager reads, from the tickets as they are."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from app import World, forward, mailbot_cli
from sqlmodel import Session

from mailbot.staffing import report, staff

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_answered_breached_and_automatic_outcomes_are_counted_and_timed(make_world: Callable[..., World]) -> None:
    w = make_world(desk={"staff": ["ann@example.org"]})
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(forward("203.0.113.45", "a", "dana@mailops.example"))
        w.deliver(forward("203.0.113.46", "b", "erik@mailops.example"))
        w.run()
        w.desk.flush()
        clock.shift(timedelta(hours=2))
        staff.answer(w.desk.engine, "DL-000001", "ann@example.org", "delisted")  # by a person, in 2 h
        clock.shift(timedelta(hours=47))
        w.desk.sweep()  # DL-000002 passes the 48-hour mark
        staff.close(w.desk.engine, "DL-000002", "ann@example.org", "late")
        with Session(w.desk.engine) as session:
            r = report.build(session, T0 - timedelta(days=1), T0 + timedelta(days=3))
    assert (r.requests, r.outcomes, r.by_hand, r.automatic) == (2, 2, 2, 0)
    assert (r.sla_clocks, r.sla_met, r.sla_breached, r.sla_running) == (2, 1, 1, 0)
    assert r.to_outcome.median == 2 * 3600 and r.to_outcome.worst == 49 * 3600
    assert r.first_reply.count == 2 and (r.first_reply.worst or 0) < 60  # the acknowledgements, at once
    assert r.per_assignee == {"(nobody)": {"requests": 2, "outcomes": 2, "open": 0, "breached": 1}}


def test_the_report_runs_on_the_demo_s_database(tmp_path: Path) -> None:
    assert mailbot_cli("demo", "--dir", str(tmp_path / "demo")).returncode == 0
    config = str(tmp_path / "demo" / "mailbot.toml")
    r = mailbot_cli("-c", config, "report", "--json")
    assert r.returncode == 0, r.stderr
    figures: dict[str, Any] = json.loads(r.stdout)
    assert figures["requests"] >= 7 and figures["automatic"] >= 3  # redirected, not ours, not a block
    assert figures["by_state"]["open"] == 2 and figures["sla"]["running"] == 2
    text = mailbot_cli("-c", config, "report").stdout
    assert "Outcomes:" in text and "by mailbot itself" in text and "Forward to first reply" in text
