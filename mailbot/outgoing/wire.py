"""The bytes of an outgoing mail, as the standard library's compat32 generator writes them,
put together from pieces made once (issue #16).

Every mail mailbot writes has one of two fixed shapes: the header fields, then either one text
part, or a multipart/alternative of a text and an HTML part; every part UTF-8 and
quoted-printable. Building an `email.mime` object per mail and flattening it made a `Header`
object and folded it for each field, built each part's headers and parsed them again, and
searched the text for the boundary with a pattern compiled for it. Here:

- each part's header block, and the framing of the multipart, come from the stdlib's own classes,
  flattened once at import;
- a field whose line fits in 78 characters of printable ASCII is written as it stands, which is
  what `Header.encode` makes of it; any other field goes through the policy's own
  `fold_binary`, the generator's call;
- a body is what `Message.set_payload(text, <utf-8, quoted-printable>)` stores and the generator
  writes: `quoprimime.body_encode` of its UTF-8 bytes, every line end CRLF.

tests/test_compose_bytes.py compares whole mails with the `email.mime` composition as it was,
with the Message-ID, the Date and the boundary fixed.
"""

from __future__ import annotations

import random
import re
import sys
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32

POLICY = compat32.clone(linesep="\r\n")
MAX_LINE = 78
"""compat32's max_line_length: where the generator folds a header field."""
_NL = re.compile(r"\r\n|\r|\n")
_SAMPLE_BOUNDARY = "=" * 15 + "0" * 19 + "=="


def field(name: str, value: str | Header) -> bytes:
    """One header field as the generator writes it, folded, with its CRLF."""
    if isinstance(value, str) and value.isascii() and value.isprintable() and len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}\r\n".encode("ascii")
    return POLICY.fold_binary(name, value)  # type: ignore[arg-type]  # compat32 folds a Header too


def boundary() -> str:
    """A boundary as the generator makes one (15 "=", 19 digits, "=="). Left to the generator it
    also searches the parts for it with a pattern compiled for that boundary; quoted-printable
    text cannot hold "==", so that search never finds one."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="


_UNSAFE = re.compile(r"[^\t\n\r -<>-~]")
"""What `quoprimime.body_encode` quotes: all but printable ASCII, tab and line ends, and "="."""
QP_LINE = 76
"""RFC 2045's longest quoted-printable line, body_encode's default."""


def _quoted(match: re.Match[str]) -> str:
    return quoprimime.quote(match.group())


def body(content: str) -> bytes:
    """`content` as a UTF-8 quoted-printable part carries it, CRLF line ends: what
    `quoprimime.body_encode` makes of it, each line end then written CRLF. That function quotes
    through a 256-entry table, character by character (65 us for an HTML reply); here only the
    characters it quotes are replaced (20 us), and its soft line breaks are its own loop, kept
    as it is (`_soft_broken`). tests/test_compose_bytes.py compares the two."""
    text = content.encode("utf-8").decode("latin-1")
    if not text:
        return b""
    pieces = _NL.split(text)  # body_encode's lines: CR and LF are all it leaves unquoted to split on
    if text[-1] in "\r\n":
        pieces.pop()  # the empty piece after the last line end (added back below, as body_encode does)
    lines: list[str] = []
    for piece in pieces:
        line = _UNSAFE.sub(_quoted, piece)
        if len(line) <= QP_LINE and line[-1:] not in (" ", "\t"):
            lines.append(line)
        else:
            _soft_broken(line, lines)
    if text[-1] in "\r\n":
        lines.append("")
    return "\r\n".join(lines).encode("ascii")


def _soft_broken(line: str, out: list[str]) -> None:
    """One quoted line as `quoprimime.body_encode` breaks it (its loop, line for line): pieces of
    at most 75 characters and a soft break "=", never inside an escape; a space or tab at its end
    quoted, or kept before a soft break where there is no room to quote it."""
    start = 0
    laststart = len(line) - 1 - QP_LINE
    while start <= laststart:
        stop = start + QP_LINE - 1
        if line[stop - 2] == "=":
            out.append(line[start:stop - 1])
            start = stop - 2
        elif line[stop - 1] == "=":
            out.append(line[start:stop])
            start = stop - 1
        else:
            out.append(line[start:stop] + "=")
            start = stop
    if line and line[-1] in " \t":
        room = start - laststart
        if room >= 3:
            out.append(line[start:-1] + quoprimime.quote(line[-1]))
        elif room == 2:
            out += [line[start:-1] + line[-1] + "=", ""]
        else:
            out += [line[start:-1] + "=", quoprimime.quote(line[-1])]
    else:
        out.append(line[start:])


UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP  # readable source, and safe for any line length


def _text_part(subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part.set_payload("x\n", UTF8_QP)
    return part


def _part_head(subtype: str) -> bytes:
    """A part's header block and the blank line after it, as the generator writes them."""
    flat = _text_part(subtype).as_bytes(policy=POLICY)
    return flat[:flat.index(b"\r\n\r\n") + 4]


def _single_head() -> bytes:
    """A one-part mail's MIME fields, moved after the addressing fields in this order."""
    part = _text_part("plain")
    return b"".join(field(k, part[k]) for k in ("MIME-Version", "Content-Type", "Content-Transfer-Encoding")) \
        + b"\r\n"


def _multipart_head() -> tuple[bytes, bytes]:
    """A multipart/alternative mail's MIME fields, before and after the boundary in them (a
    boundary's length and characters are fixed, so it folds the same way each time)."""
    outer = MIMEMultipart("alternative")
    outer.set_boundary(_SAMPLE_BOUNDARY)
    folded = field("MIME-Version", outer["MIME-Version"]) + field("Content-Type", outer["Content-Type"])
    before, sample, after = folded.partition(_SAMPLE_BOUNDARY.encode())
    if not sample or _SAMPLE_BOUNDARY.encode() in after:
        raise RuntimeError(f"unexpected multipart fields: {folded!r}")
    return before, after + b"\r\n"


_PLAIN_HEAD, _HTML_HEAD = _part_head("plain"), _part_head("html")
_SINGLE_HEAD = _single_head()
_BEFORE_BOUNDARY, _AFTER_BOUNDARY = _multipart_head()


def single(text: str) -> bytes:
    """A one-part mail's MIME fields (they follow the addressing fields), the blank line and its text."""
    return _SINGLE_HEAD + body(text)


def alternative(text: str, html: str, separator: str) -> bytes:
    """A multipart/alternative mail's MIME fields, the blank line, and its two parts."""
    b = separator.encode("ascii")
    return (_BEFORE_BOUNDARY + b + _AFTER_BOUNDARY + b"--" + b + b"\r\n" + _PLAIN_HEAD + body(text)
            + b"\r\n--" + b + b"\r\n" + _HTML_HEAD + body(html) + b"\r\n--" + b + b"--\r\n")
