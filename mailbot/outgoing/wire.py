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


def body(content: str) -> bytes:
    """`content` as a UTF-8 quoted-printable part carries it, CRLF line ends."""
    encoded = quoprimime.body_encode(content.encode("utf-8").decode("latin-1"))
    return "\r\n".join(_NL.split(encoded)).encode("ascii")


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
