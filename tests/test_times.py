"""Times a person reads are in one zone, the desk's, and named; senders also get the due time in UTC."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from app import World, imap_toml, mailbot_cli, sample

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z")
A_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d\S*(?: [A-Z]{3,5})?")


def plain_and_html(w: World) -> tuple[str, str]:
    ack = w.smtp.wait_for(1)[0].message
    text = " ".join(ack.get_body(("plain",)).get_content().split())  # wrapping aside
    return text, ack.get_body(("html",)).get_content()


@pytest.mark.parametrize(("t0", "local", "utc"), [
    (datetime(2026, 11, 30, 12, 0, tzinfo=UTC), "2026-12-02 13:00 CET", "2026-12-02 12:00 UTC"),
    (datetime(2026, 7, 1, 10, 0, tzinfo=UTC), "2026-07-03 12:00 CEST", "2026-07-03 10:00 UTC"),
], ids=["winter", "summer"])
def test_the_acknowledgement_gives_the_due_time_in_the_desks_zone_and_in_utc(
        make_world: Any, t0: datetime, local: str, utc: str) -> None:
    w: World = make_world()  # desk.timezone = Europe/Berlin
    with time_machine.travel(t0, tick=False):
        w.deliver(sample("01-banned-sender-attached.eml"))
        w.run()
    text, html = plain_and_html(w)
    assert f"We will answer by {local} ({utc})." in text
    assert f"<strong>{local}</strong> ({utc})." in html


def test_a_desk_in_utc_does_not_say_the_time_twice(make_world: Any) -> None:
    w: World = make_world(desk={"timezone": "UTC"})
    with time_machine.travel(datetime(2026, 11, 30, 12, 0, tzinfo=UTC), tick=False):
        w.deliver(sample("01-banned-sender-attached.eml"))
        w.run()
    text, _html = plain_and_html(w)
    assert "We will answer by 2026-12-02 12:00 UTC." in text and "(2026-12-02" not in text


def test_show_writes_every_time_in_the_desks_zone_and_json_keeps_utc(
        make_world: Any, tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    w: World = make_world()
    with time_machine.travel(datetime(2026, 11, 30, 12, 0, tzinfo=UTC), tick=False):
        w.deliver(sample("01-banned-sender-attached.eml"))
        w.run()
    w.desk.engine.dispose()
    config = str(imap_toml(tmp_path, dovecot, smtp_server, database_url, desk={"timezone": "Europe/Berlin"}))

    shown = mailbot_cli("-c", config, "show", "DL-000001")
    assert shown.returncode == 0, shown.stderr
    times = A_TIME.findall(shown.stdout)
    assert len(times) >= 5  # opened, due, acknowledged, the forward, its events
    assert set(times) == {"2026-11-30 13:00 CET", "2026-12-02 13:00 CET"}, shown.stdout
    assert not ISO_UTC.search(shown.stdout)
    assert "due: 2026-12-02 13:00 CET" in shown.stdout

    as_json = json.loads(mailbot_cli("-c", config, "show", "DL-000001", "--json").stdout)
    assert as_json["due_at"] == "2026-12-02T12:00:00Z"
    assert all(ISO_UTC.fullmatch(e["at"]) for e in as_json["events"])
