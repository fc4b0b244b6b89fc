"""The text part's line layout (`outgoing.plaintext`): a line that fits is written as textwrap
would write it, without going through textwrap (issue #16)."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.outgoing import plaintext
from mailbot.outgoing.plaintext import _GLUE, _UNBROKEN, WIDTH, fill, reflow


def wrapped_by_textwrap(text: str, first: str, rest: str, width: int) -> list[str]:
    """`plaintext._wrap` as it was: every line through textwrap."""
    glued = _UNBROKEN.sub(lambda m: m.group(0).replace(" ", _GLUE), text)
    lines = textwrap.wrap(glued, width, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                          break_on_hyphens=False) or [first.rstrip()]
    return [line.replace(_GLUE, " ") for line in lines]


WORDS = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    [" ", "  ", "\t", "\x00", "\u2003", "\xa0", "550 5.7.511", "2026-12-02 14:00 CET", "x" * 80, "-"])), max_size=14)


@settings(max_examples=3000, deadline=None)
@given(words=WORDS, first=st.sampled_from(["", "  - ", "    "]), rest=st.sampled_from(["", "    "]),
       width=st.sampled_from([20, WIDTH, 78]))
def test_a_line_is_laid_out_as_textwrap_lays_it_out(words: list[str], first: str, rest: str, width: int) -> None:
    text = " ".join(words)
    assert plaintext._wrap(text, first, rest, width) == wrapped_by_textwrap(text, first, rest, width)


def test_a_short_paragraph_stays_one_line_and_a_long_one_is_filled() -> None:
    assert reflow("Your request is DL-000001.\n\nThanks") == "Your request is DL-000001.\n\nThanks"
    long = "We will answer by 2026-12-02 14:00 CET " + "and say what the review found " * 4
    lines = reflow(long).split("\n")
    assert len(lines) > 1 and all(len(line) <= WIDTH for line in lines)
    assert any("2026-12-02 14:00 CET" in line for line in lines)  # a time is never broken
    assert fill("a b", "> ") == "> a b"
