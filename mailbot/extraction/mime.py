"""MIME walking: raw bytes in, a tree of readable blocks out.

Contract: `read_message(raw, budget)` never raises. It parses with the
stdlib's compat32 policy (no header decoding: a Subject of 32,000 encoded
words costs nothing) and returns a `Node` per message (the outer mail, each
attached or nested message, each parsed .eml/.msg/winmail.dat attachment).
A node holds its own readable blocks in document order: text parts (HTML
rendered, quote markers removed), `message/delivery-status` fields, and
returned headers (kept apart so nobody reads IPs from them); a whole message
pasted into a text part (`pasted.embedded_message`) is a nested message. Messages
returned inside a `multipart/report` are marked `returned`. Depth, part
count, bytes per part and the deadline are capped (see `limits`); what is
skipped becomes a note on the budget.
"""

from __future__ import annotations

import email.policy
import quopri
import re
from dataclasses import dataclass, field
from email import utils
from email.message import Message
from typing import Any, Literal

from mailbot.extraction import attachments, mimeparse
from mailbot.extraction.limits import MAX_DEPTH, MAX_PART_BYTES, MAX_PARTS, Budget
from mailbot.extraction.pasted import embedded_message, unpaste
from mailbot.extraction.text import html_to_text, plain_lines, to_text

Kind = Literal["text", "dsn", "headers"]


@dataclass
class Block:
    source: str
    """Part path and content type, e.g. "2 message/rfc822 > 1 text/plain"."""
    kind: Kind
    lines: list[str]


@dataclass
class Node:
    """One message: its own blocks, then the messages nested in it."""

    blocks: list[Block] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    returned: bool = False
    """A message returned inside a multipart/report (the bounced original)."""
    report: bool = False
    """Holds a message/delivery-status part: an NDR by structure."""


_PLAIN_TYPES = frozenset(
    {"text/plain", "text/enriched", "text/x-aol", "text/rfc822", "message/disposition-notification"}
)
_CODE_LIKE = re.compile(r"[45]\d\d|[45]\.\d{1,3}\.\d")
_NEWLINES = re.compile(r"\r\n?")


def _parseparam(value: str) -> list[str]:
    """email.message._parseparam, in linear time.

    The stdlib's copies the rest of the header for every ";" and recounts the
    quotes from its start for every quoted ";": `text/plain; a="` followed by a
    megabyte of ";" never ends. Same results: the quote count goes on from the
    last ";" (a backslash-quote never spans one), and offsets replace slices."""
    s = ";" + value
    n = len(s)
    plist: list[str] = []
    pos = 0
    while pos < n and s[pos] == ";":
        pos += 1
        end = s.find(";", pos)
        quotes, counted = 0, pos
        while end > pos:
            quotes += s.count('"', counted, end) - s.count('\\"', counted, end)
            if quotes % 2 == 0:
                break
            counted = end
            end = s.find(";", end + 1)
        if end < 0:
            end = n
        f = s[pos:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1 :].strip()
        plist.append(f.strip())
        pos = end
    return plist


class _Message(Message):
    """compat32's Message with a linear parameter parser (boundary, charset, filename)."""

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        # The stdlib's method, over `_parseparam` above.
        missing = object()
        value = self.get(header, missing)
        if value is missing:
            return failobj
        params: list[tuple[str, str]] = []
        for p in _parseparam(str(value)):
            try:
                name, val = p.split("=", 1)
                name = name.strip()
                val = val.strip()
            except ValueError:  # a bare attribute
                name = p.strip()
                val = ""
            params.append((name, val))
        return utils.decode_params(params)


_PARSER = mimeparse.Parser(_Message, email.policy.compat32)  # the stdlib's parser, no regex compiled per boundary
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_MESSAGE_TYPES = ("message/rfc822", "message/global", "message/partial-rfc822")
_HEADER_TYPES = ("text/rfc822-headers", "message/global-headers")


def parse_bytes(raw: bytes, budget: Budget) -> Message | None:
    try:
        return _PARSER.parsebytes(raw)
    except MemoryError:
        raise  # the process's owner decides (extract() lets it through)
    except RecursionError:
        # The stdlib parser recurses per nested message; read the top level only.
        budget.note("MIME nesting too deep; nested parts read as text")
        try:
            return _PARSER.parsebytes(raw, headersonly=True)
        except MemoryError:
            raise
        except Exception as exc:  # the parser's failure modes are not documented
            budget.note(f"unparseable MIME: {type(exc).__name__}")
            return None
    except Exception as exc:
        budget.note(f"unparseable MIME: {type(exc).__name__}")
        return None


def read_message(raw: bytes, budget: Budget) -> Node | None:
    msg = parse_bytes(raw, budget)
    if msg is None:
        return None
    node = Node()
    _walk_message(msg, node, "", 0, budget)
    return node


def _walk_message(msg: Message, node: Node, prefix: str, depth: int, budget: Budget) -> None:
    if msg.is_multipart() and msg.get_content_type().startswith("multipart/"):
        _walk_children(msg, node, prefix, "", depth, budget)
    else:
        _leaf(msg, node, prefix, "1", depth, budget)


def _walk_children(msg: Message, node: Node, prefix: str, path: str, depth: int, budget: Budget) -> None:
    payload = msg.get_payload()
    if not isinstance(payload, list):
        return
    is_report = msg.get_content_type() == "multipart/report"
    for i, part in enumerate(payload, 1):
        if not isinstance(part, Message):
            continue
        sub = f"{path}.{i}" if path else str(i)
        ctype = part.get_content_type()
        if is_report and i > 1 and (ctype in _MESSAGE_TYPES or ctype in _HEADER_TYPES):
            node.report = True
            if ctype in _HEADER_TYPES:
                _leaf(part, node, prefix, sub, depth, budget)
                continue
            # The bounced original is never read, so it is not even walked.
            node.children.append(Node(returned=True))
            continue
        if part.is_multipart() and ctype.startswith("multipart/"):
            if depth + 1 > MAX_DEPTH:
                budget.note("MIME depth cap reached; deeper parts skipped")
                continue
            _walk_children(part, node, prefix, sub, depth + 1, budget)
        else:
            _leaf(part, node, prefix, sub, depth, budget)


def _nested(part: Message, child: Node, prefix: str, sub: str, depth: int, budget: Budget) -> None:
    if depth + 1 > MAX_DEPTH:
        budget.note("MIME depth cap reached; deeper messages skipped")
        return
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        here = f"{prefix}{sub} {part.get_content_type()} > "
        _walk_message(inner[0], child, here, depth + 1, budget)
    elif isinstance(inner, str):
        # message/rfc822 with a transfer encoding the parser left undecoded.
        data = _payload_bytes(part, budget)
        msg = parse_bytes(data, budget) if data else None
        if msg is not None:
            _walk_message(msg, child, f"{prefix}{sub} {part.get_content_type()} > ", depth + 1, budget)


def _payload_bytes(part: Message, budget: Budget) -> bytes:
    try:
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        body = part.get_payload()
        if cte == "quoted-printable" and isinstance(body, str) and "\r" in body:
            # Soft line breaks of CR-only mail ("=\r") are not seen by the stdlib.
            body = _NEWLINES.sub("\n", body[: MAX_PART_BYTES * 2])
            raw: Any = quopri.decodestring(body.encode("ascii", "surrogateescape"))
        else:
            raw = part.get_payload(decode=True)
    except MemoryError:
        raise
    except Exception as exc:  # malformed transfer encodings
        budget.note(f"undecodable part: {type(exc).__name__}")
        return b""
    if not isinstance(raw, bytes):
        return b""
    if len(raw) > MAX_PART_BYTES:
        budget.note(f"part cut to {MAX_PART_BYTES} bytes")
        return raw[:MAX_PART_BYTES]
    return bytes(raw)


def _leaf(part: Message, node: Node, prefix: str, sub: str, depth: int, budget: Budget) -> None:
    budget.parts += 1
    if budget.parts > MAX_PARTS:
        if budget.parts == MAX_PARTS + 1:
            budget.note(f"more than {MAX_PARTS} MIME parts; the rest skipped")
        return
    if budget.expired():
        return
    ctype = part.get_content_type()
    source = f"{prefix}{sub} {ctype}"
    if ctype in _MESSAGE_TYPES:
        child = Node()
        node.children.append(child)
        _nested(part, child, prefix, sub, depth, budget)
        return
    if ctype in _DSN_TYPES:
        node.report = True
        node.blocks.append(Block(source, "dsn", _dsn_lines(part, budget)))
        return
    if ctype in _HEADER_TYPES:
        # Returned headers: kept as a marker, never read (their IPs are the sender's relays).
        node.blocks.append(Block(source, "headers", []))
        return
    if ctype.startswith("multipart/"):
        # A multipart whose boundary was lost (a broken header fold) arrives
        # as one string: what a mail client would show is its text.
        ctype = "text/plain"
    if ctype.startswith("text/") or ctype == "message/disposition-notification":
        text = _decoded_text(part, budget)
        if ctype in _PLAIN_TYPES and (at := embedded_message(text)) is not None and depth + 1 <= MAX_DEPTH:
            # A whole message pasted into the body (a terminal client's forward): read like an attached one.
            _pasted(text[at:], node, source, depth, budget)
            text = text[:at]
        if not _CODE_LIKE.search(text) and not (budget.also_read and budget.also_read.search(text)):
            # No status or reply code anywhere, nor a provider's words: nothing here can be a rejection.
            return
        if ctype == "text/html":
            text = html_to_text(text)
        elif ctype not in _PLAIN_TYPES:
            return
        node.blocks.append(Block(source, "text", plain_lines(unpaste(text))))
        return
    if depth + 1 > MAX_DEPTH:
        return
    for kind, data in attachments.open_attachment(part, _payload_bytes, budget):
        if kind == "message":
            msg = parse_bytes(data, budget)
            if msg is not None:
                child = Node()
                node.children.append(child)
                _walk_message(msg, child, f"{source} > ", depth + 1, budget)
        else:
            node.blocks.append(Block(f"{source} > {kind}", "text", plain_lines(data.decode("utf-8", "replace"))))


def _pasted(text: str, node: Node, source: str, depth: int, budget: Budget) -> None:
    msg = parse_bytes(text.encode("utf-8", "replace"), budget)
    if msg is not None:
        child = Node()
        node.children.append(child)
        _walk_message(msg, child, f"{source} > pasted message > ", depth + 1, budget)


def _decoded_text(part: Message, budget: Budget) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # a mangled Content-Type parameter list
        charset = None
    return to_text(_payload_bytes(part, budget), charset)


def _dsn_lines(part: Message, budget: Budget) -> list[str]:
    payload = part.get_payload()
    if isinstance(payload, list):
        # compat32 parses each DSN field group into a Message of headers.
        lines: list[str] = []
        for group in payload:
            if not isinstance(group, Message):
                continue
            for name, value in group.items():
                lines.extend(f"{name}: {value}".splitlines())
            lines.append("")
        return [ln.replace("\x00", "").rstrip() for ln in lines]
    return plain_lines(_decoded_text(part, budget))
