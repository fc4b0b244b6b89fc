"""Hostile shapes are read in time linear in their size (issue #12).

Each shape of tests/hostile.py once made a pattern rescan the input from
every position (minutes for a few hundred KB). Each is run in a child
process, with extraction's own time budget turned off so that what is timed
is the cost of the whole part, and stopped if it runs away.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile import SHAPES, build

from mailbot.extraction import extract
from mailbot.extraction.limits import MAX_TEXT_CHARS, TOTAL_SECONDS

ROOT = Path(__file__).resolve().parents[1]
# A shape whose hostile text hides the rejection from the caps reports what it can.
EXPECTED = {"near-miss": None, "dsn-records": "5.1.1", "mime-parts": None}

CHILD = """
import json, sys, time
sys.path[:0] = [{root!r}, {tests!r}]
from hostile import build
from mailbot.extraction import extract, limits
limits.Budget.expired = lambda self: False
raw = build({shape!r}, {size}, False)
t = time.perf_counter()
found = extract(raw)
print(json.dumps({{"seconds": time.perf_counter() - t, "status": found.status, "ips": list(found.ips),
                  "unreadable": found.unreadable}}))
"""


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_whole_part_of_hostile_text_is_read_in_well_under_a_second_or_two(shape: str) -> None:
    # The per-part cap (MAX_TEXT_CHARS) is the most a single pattern is run over.
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), shape=shape, size=MAX_TEXT_CHARS)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{shape}: extraction of {MAX_TEXT_CHARS} bytes still running after 60 s")
    result = json.loads(out.stdout)
    assert result["seconds"] < 3.0, result
    assert result["unreadable"] is None
    assert result["status"] == EXPECTED.get(shape, "5.7.511")
    if result["status"] == "5.7.511":
        assert result["ips"][0] == "203.0.113.45"


def test_a_5_mb_hostile_mail_stops_at_the_budget_with_what_it_found_and_a_note() -> None:
    raw = build("dsn-records", 5_000_000, spread=True)  # about 5 s to read whole
    start = time.monotonic()
    found = extract(raw)
    elapsed = time.monotonic() - start
    # The budget is looked at between parts; one 100 KB part costs far less than a second.
    assert elapsed < TOTAL_SECONDS + 1.5, elapsed
    assert found.status == "5.1.1"
    assert "time limit reached; the mail was read in part" in found.notes


def test_a_decimal_character_reference_of_5000_digits_is_one_replacement_character() -> None:
    raw = (b"Content-Type: text/html\r\n\r\n<p>&#" + b"0" * 5000 + b"65;&#" + b"9" * 5000 + b";</p>"
           b"<p>550 5.7.511 Access denied, banned sender[203.0.113.45]</p>")
    found = extract(raw)
    assert found.unreadable is None
    assert found.status == "5.7.511"
