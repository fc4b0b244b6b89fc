"""Extraction's MIME parser is the standard library's without a regex compiled per boundary
(issue #16): the same trees, byte for byte, and no pattern compiled for a message's boundaries."""

from __future__ import annotations

import email.policy
import random
import re
from email.message import Message
from email.parser import BytesParser
from typing import Any

import hostile
import pytest
from corpus import corpus_dir

from mailbot.extraction import mimeparse


def tree(msg: Message) -> Any:
    """Everything the parser decided: headers as stored, preamble, epilogue, defects, parts or payload."""
    payload = msg.get_payload()
    return (msg.get_unixfrom(), list(msg.raw_items()), msg.preamble, msg.epilogue,
            [type(d).__name__ for d in msg.defects],
            [tree(p) for p in payload] if msg.is_multipart() else payload)


STDLIB = BytesParser(policy=email.policy.compat32)
OURS = mimeparse.Parser(Message, email.policy.compat32)


def same(raw: bytes, headersonly: bool = False) -> bool:
    return tree(OURS.parsebytes(raw, headersonly)) == tree(STDLIB.parsebytes(raw, headersonly))


def test_every_mail_of_the_corpus_parses_to_the_stdlib_tree() -> None:
    files = sorted(corpus_dir().rglob("*.eml"))
    assert len(files) > 3000
    assert [str(p) for p in files if not same(p.read_bytes())] == []


def multipart(boundary: str, parts: list[bytes], end: bytes = b"\r\n", close: bool = True,
              preamble: bytes = b"pre", epilogue: bytes = b"epi") -> bytes:
    b = boundary.encode()
    out = (b"From: a@b.example" + end + b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"" + end + end
           + preamble + end)
    for p in parts:
        out += b"--" + b + end + p + end
    if close:
        out += b"--" + b + b"--" + end + epilogue
    return out


SHAPES: dict[str, bytes] = {
    # every character re.escape escapes, in a boundary (RFC 2046 allows some of them)
    "regex characters": multipart("a.b+c*d?e(f)g[h]i{j}k|l^m$n\\o&p~q#r s-t", [b"\r\nx", b"\r\ny"]),
    "trailing blanks and LF": multipart("b1", [b"\nx"], end=b"\n").replace(b"--b1\n", b"--b1 \t\n"),
    "CR line ends": multipart("b2", [b"\rx", b"\ry"], end=b"\r"),
    "no closing boundary": multipart("b3", [b"\r\nx"], close=False),
    "doubled boundary lines": multipart("b4", [b"\r\nx"]).replace(b"--b4\r\n", b"--b4\r\n--b4\r\n", 1),
    "a boundary prefix in the text": multipart("b5", [b"\r\n--b5x is not it\r\n--b5-- neither"]),
    "nested": multipart("outer", [b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\r\n"
                                  b"a\r\n--inner\r\n\r\nb\r\n--inner--\r\n"]),
    "empty boundary": multipart("", [b"\r\nx"]),
    "unicode boundary": multipart("b\u00e9", [b"\r\nx"]).replace("b\u00e9".encode(), "b\u00e9".encode("latin-1")),
    "no end of line at all": b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nx\r\n--z--",
}


@pytest.mark.parametrize("name", SHAPES)
def test_boundary_edge_cases_parse_to_the_stdlib_tree(name: str) -> None:
    assert same(SHAPES[name])
    assert same(SHAPES[name], headersonly=True)


@pytest.mark.parametrize("shape", sorted(hostile.SHAPES))
def test_hostile_shapes_parse_to_the_stdlib_tree(shape: str) -> None:
    assert same(hostile.build(shape, 30_000, spread=True))
    assert same(hostile.many_parts(30_000))


def test_no_pattern_is_compiled_for_a_message_s_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[object] = []
    real = re.compile

    def counting(pattern: Any, flags: int = 0) -> Any:
        compiled.append(pattern)
        return real(pattern, flags)

    monkeypatch.setattr(re, "compile", counting)
    rng = random.Random(16)
    mails = [multipart(f"=_{rng.getrandbits(64):x}", [b"\r\nx", b"Content-Type: multipart/alternative; "
                                                       b"boundary=\"in" + str(i).encode() + b"\"\r\n\r\n--in"
                                                       + str(i).encode() + b"\r\n\r\ny\r\n"]) for i in range(20)]
    for raw in mails:
        STDLIB.parsebytes(raw)
    assert len(compiled) == 40  # the stdlib: one per multipart, each boundary new
    compiled.clear()
    for raw in mails:
        assert len(OURS.parsebytes(raw).get_payload()) == 2
    assert compiled == []
