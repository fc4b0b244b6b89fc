"""Line layout of the text part of outgoing mail: the Jinja2 filters of the text templates.

Values of any length (an IPv6 address, a desk's long name, a staff note) go
into the text, so templates cannot be wrapped by hand: they write each
paragraph as one line and let these filters break it.

- `reflow` (`{% filter reflow %}...{% endfilter %}`): every line that starts
  with a letter is a paragraph, filled to `WIDTH` columns; `  - ` items are
  filled with a hanging indent; other indented lines (tables, a quoted
  rejection line, a URL) are kept as they are; blank lines collapse to one.
- `fill(indent)`: one paragraph, every line starting with `indent`.
- `quote(prefix)`: a person's text, each line behind `prefix`; lines their
  mail program had wrapped are joined and filled again, short lines (a
  greeting, a name) stay.
- `row`: cells of a table row, two spaces apart, that go on under a hanging
  indent when the next cell would pass `ROW_WIDTH`.

Words are never broken, so a URL or an address longer than the line stays
whole; no line is longer than `WIDTH` otherwise. A time with its zone
("2026-12-02 14:00 CET") and a full code ("550 5.7.511") stay on one line.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from typing import Any

WIDTH = 72
"""Columns of a text line: room for two levels of "> " quoting in a reply within 78 (RFC 5322 2.1.1)."""
ROW_WIDTH = 78
"""Columns of a table row: all of RFC 5322's 78, since breaking a row costs more than a reply's quote marks."""
WRAPPED = 60
"""A line at least this long, followed by more text, was wrapped by the writer's mail program."""

_BULLET = re.compile(r"^( +- )(\S.*)$")
_UNBROKEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(?: (?:[A-Z]{2,5}|[+-]\d{2,4}))?"  # a time, with its zone
                       r"|\b[245]\d\d [245]\.\d{1,3}\.\d{1,3}\b")  # a full code, 550 5.7.511
"""Groups of words a reader takes in as one: a line break inside them misleads."""
_GLUE = "\x00"


_RESHAPED = re.compile(r"[\t\n\x0b\x0c\r\x00]")
"""What textwrap turns into spaces before wrapping (and the glue): a line holding one is wrapped."""


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    if len(first) + len(text) <= width and text and text == text.strip() and not _RESHAPED.search(text):
        return [first + text]  # what textwrap makes of a line that fits, without its chunking (#16)
    glued = _UNBROKEN.sub(lambda m: m.group(0).replace(" ", _GLUE), text)
    lines = textwrap.wrap(glued, width, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                          break_on_hyphens=False) or [first.rstrip()]
    return [line.replace(_GLUE, " ") for line in lines]


def reflow(text: str, width: int = WIDTH) -> str:
    """Fill each paragraph line of `text` to `width`; keep blank and indented lines, except `  - ` items."""
    out: list[str] = []
    for line in text.split("\n"):
        bullet = _BULLET.match(line)
        if not line.strip() and out and not out[-1].strip():
            continue  # one blank line between paragraphs, however the template's blocks fall
        if bullet:
            out += _wrap(bullet.group(2), bullet.group(1), " " * len(bullet.group(1)), width)
        elif not line.strip() or line[0].isspace():
            out.append(line)
        else:
            out += _wrap(line, "", "", width)
    return "\n".join(out)


def fill(text: str, indent: str = "", width: int = WIDTH) -> str:
    """`text` as one paragraph filled to `width`, every line starting with `indent`."""
    return "\n".join(_wrap(" ".join(text.split()), indent, indent, width))


def quote(text: str, prefix: str = "> ", width: int = WIDTH) -> str:
    """`text` behind `prefix` on every line: client-wrapped lines refilled, short and blank lines kept."""
    paragraphs: list[str] = []
    joining = False
    for line in text.splitlines():
        if joining and line.strip():
            paragraphs[-1] += " " + line.strip()
        else:
            paragraphs.append(line.strip())
        joining = len(line) >= WRAPPED
    return "\n".join(fill(p, prefix, width) if p else prefix.rstrip() for p in paragraphs)


def row(cells: Iterable[Any], indent: int = 2, hang: int | None = None, width: int = ROW_WIDTH) -> str:
    """Cells two spaces apart from column `indent`; a cell that would pass `width` starts a line at `hang`.

    `hang` defaults to the column of the second cell (at most 26), so a wrapped
    row reads as the continuation of its first cell (a ticket reference).
    """
    parts = [str(c) for c in cells if c is not None and str(c) != ""]
    if not parts:
        return ""
    if hang is None:
        hang = min(indent + len(parts[0]) + 2, 26)
    lines: list[str] = []
    line = " " * indent + parts[0]
    for cell in parts[1:]:
        if len(line) + 2 + len(cell) <= width:
            line += "  " + cell
            continue
        lines.append(line)
        flowed = _wrap(cell, " " * hang, " " * hang, width)
        lines += flowed[:-1]
        line = flowed[-1]
    lines.append(line)
    return "\n".join(lines)


FILTERS = {"reflow": reflow, "fill": fill, "quote": quote, "row": row}
"""The filters the text templates use, by name."""
