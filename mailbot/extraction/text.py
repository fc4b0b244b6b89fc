"""Text normalisation: decoded part bytes in, plain lines out.

Contract: `to_text` never raises; unknown or wrong charsets fall back to
UTF-8 then Latin-1 with replacement. `html_to_text` keeps line structure
(<br>, <p>, <div>, <tr> become line ends; a <pre> block keeps its own).
`unescape` is html.unescape made safe for hostile numbers. `plain_lines` strips the quote
markers of inline forwards ("> ", "| ") and NULs, so that an NDR quoted by a
mail client reads like the original.
"""

from __future__ import annotations

import codecs
import html
import re

from mailbot.extraction.limits import MAX_LINES, MAX_TEXT_CHARS

_CHARSET_ALIASES = {"unicode-1-1-utf-7": "utf-7", "x-sjis": "shift_jis", "ks_c_5601-1987": "cp949"}
# Codecs for host names, not bodies; punycode's decoder is quadratic in its input.
_REFUSED_CODECS = frozenset({"punycode", "idna"})


def to_text(data: bytes, charset: str | None) -> str:
    """Decode part bytes with the declared charset, else a forgiving fallback."""
    data = data[: MAX_TEXT_CHARS * 4]
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name:
        try:
            if codecs.lookup(name).name in _REFUSED_CODECS:
                raise LookupError(name)
            return data.decode(name, errors="replace")[:MAX_TEXT_CHARS]
        except (LookupError, ValueError, UnicodeError):
            pass
    try:
        return data.decode("utf-8")[:MAX_TEXT_CHARS]
    except UnicodeDecodeError:
        return data.decode("latin-1")[:MAX_TEXT_CHARS]


# Each tag pattern below is applied by `_sub_tags`, not by re.sub: a tag runs
# to the next ">", and re.sub would rescan that stretch from every "<" before
# it ("<br" * n is quadratic). The results are re.sub's, match for match.
_BLOCK_OPEN = re.compile(r"<\s*(?:br|/p|p|/div|div|/tr|tr|/li|li|/h\d|hr|/table|/blockquote|/?pre)\b", re.I)
"""Opens a tag that ends a line: the tag runs on to the next ">"."""
_AFTER_BLOCK_OPEN = re.compile(r"<\s*(?:br|/?p|/?div|/?tr|/?li|/h\d|hr)\b", re.I)
"""Opens a tag whose own source line break (spaces, tabs, "\\n" after its ">") is layout."""
_ANY_OPEN = re.compile("<")
_MAX_TAG = 2000
"""Characters between "<" and ">" of a tag that is dropped; a longer one is text."""
_DROP_OPEN = re.compile(r"<\s*(style|script|head)\b", re.I)
_PRE_OPEN = re.compile(r"<\s*(pre|xmp|textarea)\b", re.I)
_DECIMAL_REF = re.compile(r"&#([0-9]{8,})")


def html_to_text(markup: str) -> str:
    """Render HTML to lines; good enough for the tables and <br> runs of forwards."""
    markup = _drop_comments(markup)
    markup = _drop_blocks(markup)
    markup = _pre_lines(markup)
    # A source line break right after a block tag is layout of the HTML file;
    # elsewhere it is a space, as a browser shows it.
    markup = _sub_tags(markup.replace("\r", ""), _AFTER_BLOCK_OPEN, None, eat_line_end=True)
    markup = markup.replace("\n", " ")
    markup = _sub_tags(markup, _BLOCK_OPEN, "\n")
    markup = _sub_tags(markup, _ANY_OPEN, "", max_inner=_MAX_TAG)
    return unescape(markup).replace("\xa0", " ")


def unescape(text: str) -> str:
    """html.unescape, but a decimal reference of thousands of digits is one replacement character."""
    return html.unescape(_DECIMAL_REF.sub(_short_ref, text))


def _pre_lines(markup: str) -> str:
    """Inside <pre> (a code block: a pasted transcript or log), each source line is a line: its line
    ends become <br>. Each opener's closing tag is looked for once, and not again once missing."""
    out: list[str] = []
    pos = 0
    m = _PRE_OPEN.search(markup)
    while m is not None:
        name = m.group(1).lower()
        close = re.compile(rf"<\s*/\s*{name}\s*>", re.I).search(markup, m.end())
        end = close.start() if close is not None else len(markup)
        out.append(markup[pos : m.end()])
        out.append(markup[m.end() : end].replace("\r\n", "\n").replace("\n", "<br>"))
        pos = end
        if close is None:
            break
        m = _PRE_OPEN.search(markup, close.end())
    out.append(markup[pos:])
    return "".join(out)


def _drop_comments(markup: str) -> str:
    """re.sub(r"<!--.*?-->", "", markup, flags=re.S) without rescanning an unclosed comment."""
    out: list[str] = []
    pos = 0
    while (start := markup.find("<!--", pos)) >= 0:
        end = markup.find("-->", start + 4)
        if end < 0:
            break  # no comment closes after here
        out.append(markup[pos:start])
        pos = end + 3
    out.append(markup[pos:])
    return "".join(out)


def _drop_blocks(markup: str) -> str:
    """Remove <style>, <script> and <head> elements: re.sub of
    `<\\s*(style|script|head)\\b.*?<\\s*/\\s*\\1\\s*>` (ignoring case, across lines),
    looking for each name's closing tag once at most after it is missing."""
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()
    m = _DROP_OPEN.search(markup, pos)
    while m is not None:
        name = m.group(1).lower()
        if name not in unclosed:
            close = re.compile(rf"<\s*/\s*{name}\s*>", re.I).search(markup, m.end())
            if close is not None:
                out.append(markup[pos : m.start()])
                pos = close.end()
                m = _DROP_OPEN.search(markup, pos)
                continue
            unclosed.add(name)  # then no later one of that name closes either
        m = _DROP_OPEN.search(markup, m.start() + 1)
    out.append(markup[pos:])
    return "".join(out)


def _sub_tags(
    markup: str,
    opener: re.Pattern[str],
    repl: str | None,
    *,
    max_inner: int | None = None,
    eat_line_end: bool = False,
) -> str:
    """re.sub of `opener` + `[^>]*>` (at most `max_inner` characters between "<" and ">"),
    plus `[ \\t]*\\n` after it with `eat_line_end`, by `repl` (None: the tag itself).

    The end of a tag is the next ">" (found once for every opener before it),
    so the work is linear in the markup."""
    out: list[str] = []
    pos = 0
    gt = -1
    line_end: dict[int, int] = {}
    m = opener.search(markup, pos)
    while m is not None:
        if gt < m.end():
            gt = markup.find(">", m.end())
            if gt < 0:
                break  # no tag ends after here
        end: int | None = gt + 1
        if max_inner is not None and gt - m.start() - 1 > max_inner:
            end = None
        elif eat_line_end:
            if gt not in line_end:
                j = gt + 1
                while j < len(markup) and markup[j] in " \t":
                    j += 1
                line_end[gt] = j + 1 if j < len(markup) and markup[j] == "\n" else -1
            end = line_end[gt] if line_end[gt] >= 0 else None
        if end is None:
            m = opener.search(markup, m.start() + 1)
            continue
        out.append(markup[pos : m.start()])
        out.append(markup[m.start() : gt + 1] if repl is None else repl)
        pos = end
        m = opener.search(markup, pos)
    out.append(markup[pos:])
    return "".join(out)


def _short_ref(m: re.Match[str]) -> str:
    """A decimal character reference of 8 or more digits, shortened: html.unescape would
    convert every digit (and raise past 4,300); one above U+10FFFF is U+FFFD anyway."""
    digits = m.group(1).lstrip("0")
    return "&#" + (digits or "0") if len(digits) <= 7 else "&#1114112"


_QUOTE = re.compile(r"^(?:[ \t]?(?:>|\|)[ \t]?)+", re.M)
_NEWLINE = re.compile(r"\r\n?")
# Only from the first blank of a run: "a" + " " * n + "b" rescanned the run from each blank.
_TRAILING = re.compile(r"(?<![ \t\f\v])[ \t\f\v]+$", re.M)


def plain_lines(text: str) -> list[str]:
    """Split into lines (LF, CRLF or CR), unquote and drop NULs."""
    text = text.replace("\x00", "")
    if "\r" in text:
        text = _NEWLINE.sub("\n", text)
    # Whole-text substitutions: one C call each instead of one per line.
    if ">" in text or "|" in text:
        text = _QUOTE.sub("", text)
    text = _TRAILING.sub("", text)
    return text.split("\n", MAX_LINES)[:MAX_LINES]
