"""The extraction stage against every labelled row of the NDR corpus.

Thresholds (issue #3): 100% on the Microsoft ban categories; >= 99% on the
enhanced status code and on the IP set for rows of confidence high/medium,
in every forward variant (labels listed as disputed in tests/corpus.py are
reported but not counted); no decoy IP ever reported.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import CORRECTED, DECOY_IPS, DISPUTED, MS_BAN, Row, corpus_dir, ips_match, load_rows

from mailbot.extraction import Extraction, extract

if not (corpus_dir() / "labels.jsonl").exists():
    pytest.skip(f"no corpus at {corpus_dir()} (set MAILBOT_CORPUS)", allow_module_level=True)

ROWS = load_rows()
THRESHOLD = 99.0


@pytest.fixture(scope="module")
def results() -> dict[str, Extraction]:
    return {r.variant_file: extract(r.path.read_bytes()) for r in ROWS}


def _checks(r: Row, ex: Extraction) -> dict[str, bool]:
    return {
        "status": ex.status == r.expected_status,
        "ips": ips_match(r.expected_ips, ex.ips),
        "reply": ex.reply_code == r.expected_reply,
    }


def test_accuracy_per_variant(results: dict[str, Extraction]) -> None:
    per_variant: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    misses: list[str] = []
    for r in ROWS:
        if not r.scored or r.disputed:
            continue
        ex = results[r.variant_file]
        ok = _checks(r, ex)
        for field in ("status", "ips"):
            per_variant[r.variant][field].append(ok[field])
        if not (ok["status"] and ok["ips"]):
            misses.append(
                f"{r.variant_file} [{r.variant}]: expected {r.expected_status} "
                f"{sorted(r.expected_ips or ())} got {ex.status} {sorted(ex.ips)}"
            )
    report = []
    failed = []
    for variant, fields in sorted(per_variant.items()):
        for field, hits in fields.items():
            pct = 100.0 * sum(hits) / len(hits)
            report.append(f"{variant:20} {field:6} {pct:6.2f}% of {len(hits)}")
            if pct < THRESHOLD:
                failed.append(report[-1])
    print("\n".join([*report, "misses:", *misses]))
    assert not failed, "below threshold:\n" + "\n".join(failed + misses)


def test_disputed_labels_still_disagree(results: dict[str, Extraction]) -> None:
    # An entry whose label now agrees must leave the list.
    for file in DISPUTED:
        rows = [r for r in ROWS if r.file == file]
        assert rows, f"{file} is not in labels.jsonl"
        assert any(not all(_checks(r, results[r.variant_file]).values()) for r in rows), file


@pytest.mark.parametrize("file", CORRECTED)
def test_a_hand_corrected_label_agrees_in_every_variant(file: str, results: dict[str, Extraction]) -> None:
    rows = [r for r in ROWS if r.file == file]
    assert any("corrected" in r.label_method for r in rows), file
    wrong = {r.variant_file: c for r in rows if not all((c := _checks(r, results[r.variant_file])).values())}
    assert not wrong


def test_no_decoy_ip_is_ever_reported(results: dict[str, Extraction]) -> None:
    leaked = {
        vf: sorted(DECOY_IPS & {ip for f in ex.findings for ip in f.ips})
        for vf, ex in results.items()
        if DECOY_IPS & {ip for f in ex.findings for ip in f.ips}
    }
    assert not leaked


def test_every_row_is_read_without_unreadable(results: dict[str, Extraction]) -> None:
    assert not [vf for vf, ex in results.items() if ex.unreadable]


MS_ROWS = [r for r in ROWS if r.category in MS_BAN]


@pytest.mark.parametrize("row", MS_ROWS, ids=[f"{r.variant_file}" for r in MS_ROWS])
def test_microsoft_ban_rows(row: Row, results: dict[str, Extraction]) -> None:
    ex = results[row.variant_file]
    assert (ex.reply_code, ex.status, set(ex.ips)) == (
        row.expected_reply,
        row.expected_status,
        set(row.expected_ips or ()),
    )
    assert ex.primary is not None and ex.primary.source and ex.primary.line
