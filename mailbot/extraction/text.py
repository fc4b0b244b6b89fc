"""Text normalisation: decoded part bytes in, plain lines out.

Contract: `to_text` never raises; unknown or wrong charsets fall back to
UTF-8 then Latin-1 with replacement. `html_to_text` keeps line structure
(<br>, <p>, <div>, <tr> become line ends). `plain_lines` strips the quote
markers of inline forwards ("> ", "| ") and NULs, so that an NDR quoted by a
mail client reads like the original.
"""

from __future__ import annotations

import codecs
import html
import re

from mailbot.extraction.limits import MAX_LINES, MAX_TEXT_CHARS

_CHARSET_ALIASES = {"unicode-1-1-utf-7": "utf-7", "x-sjis": "shift_jis", "ks_c_5601-1987": "cp949"}


def to_text(data: bytes, charset: str | None) -> str:
    """Decode part bytes with the declared charset, else a forgiving fallback."""
    data = data[: MAX_TEXT_CHARS * 4]
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name:
        try:
            codecs.lookup(name)
            return data.decode(name, errors="replace")[:MAX_TEXT_CHARS]
        except (LookupError, ValueError, UnicodeError):
            pass
    try:
        return data.decode("utf-8")[:MAX_TEXT_CHARS]
    except UnicodeDecodeError:
        return data.decode("latin-1")[:MAX_TEXT_CHARS]


_BLOCK_TAG = re.compile(r"<\s*(?:br|/p|p|/div|div|/tr|tr|/li|li|/h\d|hr|/table|/blockquote)\b[^>]*>", re.I)
_DROP = re.compile(r"<\s*(style|script|head)\b.*?<\s*/\s*\1\s*>", re.I | re.S)
_AFTER_BLOCK = re.compile(r"(<\s*(?:br|/?p|/?div|/?tr|/?li|/h\d|hr)\b[^>]*>)[ \t]*\n", re.I)
_TAG = re.compile(r"<[^>]{0,2000}>")
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def html_to_text(markup: str) -> str:
    """Render HTML to lines; good enough for the tables and <br> runs of forwards."""
    markup = _COMMENT.sub("", markup)
    markup = _DROP.sub("", markup)
    # A source line break right after a block tag is layout of the HTML file;
    # elsewhere it is a space, as a browser shows it.
    markup = _AFTER_BLOCK.sub(r"\1", markup.replace("\r", ""))
    markup = markup.replace("\n", " ")
    markup = _BLOCK_TAG.sub("\n", markup)
    markup = _TAG.sub("", markup)
    text = html.unescape(markup).replace("\xa0", " ")
    return text


_QUOTE = re.compile(r"^(?:[ \t]?(?:>|\|)[ \t]?)+", re.M)
_NEWLINE = re.compile(r"\r\n?")
_TRAILING = re.compile(r"[ \t\f\v]+$", re.M)


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
