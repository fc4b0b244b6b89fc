"""The repository carries its test corpus, complete and byte for byte.

tests/corpus/ is a copy of the project's labelled corpus. A fresh clone has
only the copy, so every file a label names must be in it; given the folder it
was copied from (MAILBOT_CORPUS_SOURCE=DIR), the copy must hold every file of
it, unchanged (labels are never edited here: a difference means a stale copy).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import BUNDLED, SOURCE

LABEL_FILES = ("labels.jsonl", "lines.jsonl", "sisimai.jsonl")
NAME_KEYS = ("file", "variant_file")
"""The fields of those files that name a message of the corpus."""


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def named_files(root: Path) -> set[str]:
    """Every message path the label files of `root` name."""
    names: set[str] = set()
    for label_file in LABEL_FILES:
        for line in (root / label_file).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                names.update(row[k] for k in NAME_KEYS if row.get(k))
    return names


def test_the_copy_carries_its_licence_readme_and_labels() -> None:
    for name in ("LICENSE.set-of-emails", "README.md", *LABEL_FILES):
        assert (BUNDLED / name).is_file(), name
    assert "azumakuniyuki" in (BUNDLED / "LICENSE.set-of-emails").read_text(encoding="utf-8")


def test_every_file_a_label_names_is_in_the_copy() -> None:
    names = named_files(BUNDLED)
    # labels.jsonl alone names well over a thousand messages; a parse that found few is broken
    assert len(names) > 1000
    missing = sorted(n for n in names if not (BUNDLED / n).is_file())
    assert not missing, f"{len(missing)} labelled files missing from {BUNDLED}, e.g. {missing[:5]}"


def test_named_files_sees_a_missing_message(tmp_path: Path) -> None:
    """The check above can fail: a label naming an absent file is reported."""
    for name in LABEL_FILES:
        (tmp_path / name).write_text("")
    (tmp_path / "labels.jsonl").write_text(json.dumps({"file": "a.eml", "variant_file": "f/a/raw.eml"}) + "\n")
    (tmp_path / "a.eml").write_bytes(b"x")
    assert {n for n in named_files(tmp_path) if not (tmp_path / n).is_file()} == {"f/a/raw.eml"}


@pytest.mark.skipif(SOURCE is None, reason="MAILBOT_CORPUS_SOURCE unset: only the copy itself is checked")
def test_the_copy_is_identical_to_the_folder_it_was_copied_from() -> None:
    assert SOURCE is not None and SOURCE.is_dir(), f"MAILBOT_CORPUS_SOURCE={SOURCE} is not a folder"
    shared, bundled = _files(SOURCE), _files(BUNDLED)
    missing = sorted(set(shared) - set(bundled))
    assert not missing, f"{len(missing)} files of {SOURCE} missing from the copy, e.g. {missing[:5]}"
    extra = sorted(set(bundled) - set(shared))
    assert not extra, f"files in the copy that {SOURCE} does not have: {extra[:5]}"
    changed = sorted(n for n in shared if _digest(shared[n]) != _digest(bundled[n]))
    assert not changed, f"{len(changed)} files differ from {SOURCE}, e.g. {changed[:5]}"
