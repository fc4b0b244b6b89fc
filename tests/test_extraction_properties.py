"""Property tests: extract() never raises and stays inside its time budget.

Inputs are random bytes, random MIME-ish text, and corpus samples mutated
byte-wise (flips, cuts, insertions, duplicated regions).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import corpus_dir, load_rows

from mailbot.extraction import Extraction, extract

BUDGET_SECONDS = 2.0
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def check(raw: bytes) -> None:
    start = time.monotonic()
    ex = extract(raw)
    elapsed = time.monotonic() - start
    assert isinstance(ex, Extraction)
    assert elapsed < BUDGET_SECONDS, elapsed
    if ex.unreadable is not None:
        assert ex.unreadable.startswith("unreadable: ")
    assert ex.primary is None or ex.primary == ex.findings[0]
    ex.as_json("x")


@SETTINGS
@given(st.binary(max_size=20_000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


_PIECES = st.sampled_from(
    [
        "Content-Type: multipart/report; boundary=B\n",
        "Content-Type: message/rfc822\n",
        "Content-Type: message/delivery-status\n",
        "Content-Type: text/html; charset=x-unknown\n",
        "Content-Transfer-Encoding: base64\n",
        "Content-Transfer-Encoding: quoted-printable\n",
        "Content-Type: application/ms-tnef; name=winmail.dat\n",
        "Content-Type: application/vnd.ms-outlook; name=a.msg\n",
        "\n",
        "--B\n",
        "--B--\n",
        "Status: 5.0.0\n",
        "Diagnostic-Code: smtp; 550 5.7.606 banned sending IP [203.0.113.45]\n",
        "Remote Server returned '550 5.7.511 Access denied, banned sender[2001:db8::1]'\n",
        "    continued [198.51.100.1]:25 said:\n",
        "> > 421\n",
        "=?utf-8?q?x?= ",
        "=\r",
        "\x00",
        "<br><p>&lt;",
    ]
)


@SETTINGS
@given(st.lists(_PIECES, max_size=200))
def test_random_mime_shapes(pieces: list[str]) -> None:
    check("".join(pieces).encode("utf-8", "surrogatepass"))


def _samples() -> list[bytes]:
    if not (corpus_dir() / "labels.jsonl").exists():
        return []
    rows = load_rows()
    # Every variant of a spread of samples: a fixed, small, diverse set.
    picked = rows[:: max(1, len(rows) // 60)]
    return [r.path.read_bytes() for r in picked]


SAMPLES = _samples()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "truncate"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 500))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=200))
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 2000))] * draw(st.integers(1, 20))
        else:
            del data[i:]
    return bytes(data)


@pytest.mark.skipif(not SAMPLES, reason="no corpus (set MAILBOT_CORPUS)")
@SETTINGS
@given(mutated())
def test_mutated_corpus_samples(raw: bytes) -> None:
    check(raw)
