"""The standard library's MIME parser, without one regex compiled per multipart (issue #16).

`email.feedparser` compiles a pattern for every multipart boundary it meets: about 0.1-0.2 ms
each, two or three in a forwarded NDR, and every message brings new boundaries, so `re`'s cache
never helps. `Parser` here is the stdlib's `BytesParser` running the stdlib's own parse loop
(`FeedParser._parsegen`, the same code object, not a copy), in which `re.compile` answers that one
pattern with `Boundary`: the same test (the line starts with "--" and the boundary, and the rest
matches `_TAIL`, compiled once), the same groups the loop reads (`end`, `linesep`). Every other
pattern goes to `re.compile` as before. The trees it builds are the stdlib's, byte for byte
(tests/test_mimeparse.py compares them over the corpus and hostile shapes).
"""

from __future__ import annotations

import re
import types
from email import feedparser
from email.message import Message
from email.policy import Policy
from typing import Any

_HEAD = "(?P<sep>"
_SUFFIX = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
"""The pattern `_parsegen` compiles per multipart is _HEAD + re.escape("--" + boundary) + _SUFFIX."""
_TAIL = re.compile(_SUFFIX[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_CHUNK = 8192
"""As `email.parser.Parser.parse` feeds the feed parser."""


class Boundary:
    """Matches a boundary line as the compiled per-boundary pattern does."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if not line.startswith(self.separator):
            return None
        return _TAIL.match(line, len(self.separator))


class _Re:
    """What the parse loop sees as the `re` module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: Any, flags: int = 0) -> Any:
        if flags == 0 and isinstance(pattern, str) and pattern.startswith(_HEAD) and pattern.endswith(_SUFFIX):
            escaped = pattern[len(_HEAD):-len(_SUFFIX)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:  # exactly the boundary pattern, nothing else
                return Boundary(separator)
        return re.compile(pattern, flags)


_stdlib_loop = feedparser.FeedParser._parsegen  # type: ignore[attr-defined]  # the stdlib's, not in typeshed
_loop = types.FunctionType(_stdlib_loop.__code__, {**vars(feedparser), "re": _Re()}, _stdlib_loop.__name__,
                           _stdlib_loop.__defaults__, _stdlib_loop.__closure__)


class _FeedParser(feedparser.FeedParser):
    _parsegen = _loop


class Parser:
    """`email.parser.BytesParser(_class, policy=policy)`, minus the per-boundary compile."""

    def __init__(self, _class: type[Message], policy: Policy) -> None:
        self._class = _class
        self.policy = policy

    def parsebytes(self, raw: bytes, headersonly: bool = False) -> Message:
        text = raw.decode("ASCII", errors="surrogateescape")  # as BytesParser does
        parser = _FeedParser(self._class, policy=self.policy)
        if headersonly:
            parser._set_headersonly()  # type: ignore[attr-defined]  # what email.parser.Parser calls
        for i in range(0, len(text), _CHUNK):
            parser.feed(text[i:i + _CHUNK])
        message: Message = parser.close()
        return message
