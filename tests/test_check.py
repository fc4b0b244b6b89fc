"""`mailbot check` looks at everything the daemon will need: every configured
folder can be selected on the real Dovecot, and settings that work but leave
part of the desk silently off get a `warn` line (exit 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from app import imap_toml


def check(path: Path, password: str) -> tuple[int, dict[str, list[str]]]:
    """Exit status, and the check's lines by name (`ok    name  detail` -> {name: [line, ...]})."""
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "check"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": password})
    assert "Traceback" not in r.stderr, r.stderr
    lines: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        lines.setdefault(line.split()[1], []).append(line)
    return r.returncode, lines


QUIET = {"desk": {"staff": ["support@example.org"]}, "replies": {"authserv_ids": ["mx.example.org"]}}


def test_check_fails_on_a_sent_folder_that_does_not_exist_or_cannot_be_selected(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    dovecot.create_folder("Sent Items")
    dovecot.create_folder("Archive.2026")  # makes "Archive" a \Noselect parent
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url,
                     mailbox={"sent_folders": ["Sent", "Sent Items", "Archive"]}, **QUIET)
    code, lines = check(path, dovecot.password)
    assert code == 1
    [folders] = lines["folders"]
    assert folders.startswith("FAIL")
    assert "sent folder 'Sent' does not exist" in folders
    assert "sent folder 'Archive' cannot be selected" in folders
    assert "'Sent Items'" not in folders  # that one is fine
    assert all(ln.startswith("ok") for name, ls in lines.items() if name != "folders" for ln in ls)


def test_check_lists_every_folder_when_all_can_be_used(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                                       database_url: str) -> None:
    dovecot.create_folder("Sent")
    dovecot.create_folder("Done")
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url,
                     mailbox={"sent_folders": ["Sent"], "processed_folder": "Done"}, **QUIET)
    code, lines = check(path, dovecot.password)
    assert code == 0, lines
    assert lines["folders"] == ["ok    folders    inbox INBOX, sent Sent, processed Done, "
                                "quarantine Quarantine (created at first use)"]


def test_a_processed_folder_that_cannot_be_selected_fails(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                                          database_url: str) -> None:
    dovecot.create_folder("Archive.2026")
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, mailbox={"processed_folder": "Archive"}, **QUIET)
    code, lines = check(path, dovecot.password)
    assert code == 1
    [folders] = lines["folders"]
    assert folders.startswith("FAIL") and "processed folder 'Archive' cannot be selected" in folders


def test_settings_that_leave_part_of_the_desk_off_are_warnings_not_failures(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url,
                     templates={"dir": str(tmp_path / "no-such-folder"), "language": "fr"})
    code, lines = check(path, dovecot.password)
    assert code == 0, lines
    warnings = [ln for ls in lines.values() for ln in ls if ln.startswith("warn")]
    assert len(warnings) == 4, warnings
    [staff] = lines["staff"]
    assert staff.startswith("warn  staff ") and "desk.staff is empty" in staff
    [answers] = lines["answers"]
    assert answers.startswith("warn") and "replies.authserv_ids" in answers and "never counts as an answer" in answers
    _ok, missing_dir, language = lines["templates"]
    assert missing_dir.startswith("warn") and "no-such-folder is not a folder" in missing_dir
    assert language.startswith("warn") and "templates.language 'fr'" in language

    # German exists (shipped): no warning for it; and none at all once staff and trust are set
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, templates={"language": "de"}, **QUIET)
    code, lines = check(path, dovecot.password)
    assert code == 0 and not [ln for ls in lines.values() for ln in ls if not ln.startswith("ok")], lines
