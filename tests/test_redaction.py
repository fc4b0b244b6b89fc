"""What senders mask (mailbot/extraction/redaction.py): every masked form is named, a real
address never is, and a line built to be slow is read in linear time."""

from __future__ import annotations

import time

import pytest

from mailbot.extraction.redaction import MAX_REDACTED, redacted


@pytest.mark.parametrize(("text", "found"), [
    ("banned sending IP [x.x.x.x]", ("x.x.x.x",)),
    ("Client host [192.0.2.xxx] blocked", ("192.0.2.xxx",)),
    ("Client host [***.***.***.***] blocked", ("***.***.***.***",)),
    ("banned sender[IP]. To request removal", ("[IP]",)),
    ("from <redacted> refused", ("<redacted>",)),
    ("messages from [our IP] weren't sent", ("[our IP]",)),
    ("Client host [203.0.113.7] blocked", ()),  # a real IP is no redaction
    ("version 1.2.3.4.5 of the list", ()),
])
def test_masked_addresses_are_named_as_written(text: str, found: tuple[str, ...]) -> None:
    assert redacted([text]) == found


def test_at_most_a_few_and_linear_on_hostile_text() -> None:
    assert len(redacted([" ".join(f"x.x.x.{n}" for n in range(100))])) == MAX_REDACTED
    hostile = "x." * 200_000 + "[" + "ip " * 100_000
    start = time.perf_counter()
    redacted([hostile])
    assert time.perf_counter() - start < 2.0  # a runaway bound, not a speed target: quadratic takes minutes
