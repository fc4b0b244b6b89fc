"""The errors an operator can act on, as one tree; each carries the exit code the CLI ends with.

The exit codes are the contract in the README ("Exit codes"): 1 a check or command failed,
2 a configuration error, 3 a server or the database could not be reached or used. The CLI maps
the base class once (`mailbot.cli.operator_errors`), so a new error only has to choose its branch.

    MailbotError                    the base; never raised itself
    ├── CommandFailed               exit 1: the command could not do what was asked
    │   ├── DaemonLockError         another daemon holds the lock (locks.py)
    │   ├── TemplateError           a template is missing or does not render (render.py)
    │   ├── StaffError              a staff action refused (staff.py)
    │   ├── InitError               the config was not written (init.py)
    │   ├── ExtractorUnavailable    no extraction worker could be started (extractor.py)
    │   ├── SchemaBehind            a read-only command met an older schema (schema.py)
    │   ├── TableError              a change to the listing table refused (listing/admin.py)
    │   │   └── CsvError            a CSV file not imported, every bad line named (listing/csvfile.py)
    │   └── PermanentListingError   a listing source refused or cannot (listing/base.py)
    ├── ConfigurationError          exit 2: the configuration cannot be used
    │   └── ConfigError             names the key (config.py)
    └── Unreachable                 exit 3: a server or the database cannot be reached or used
        ├── SourceError             the mailbox: names the server and user (source.py)
        ├── DatabaseError           the database: names it, never the password (db.py)
        └── TemporaryListingError   a listing source did not answer; retry later (listing/base.py)

This module imports nothing from mailbot, so every module can raise from it without a cycle.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILED, EXIT_CONFIG, EXIT_UNREACHABLE = 1, 2, 3


class MailbotError(Exception):
    """An error the operator can act on; `operator_line()` is what the CLI prints."""

    exit_code: ClassVar[int] = EXIT_FAILED

    def operator_line(self) -> str:
        """The one line the CLI prints for this error (before exiting with `exit_code`)."""
        return str(self)


class CommandFailed(MailbotError):
    """The command could not do what was asked (exit 1)."""

    exit_code: ClassVar[int] = EXIT_FAILED


class ConfigurationError(MailbotError):
    """The configuration cannot be used (exit 2); the message names the key."""

    exit_code: ClassVar[int] = EXIT_CONFIG

    def operator_line(self) -> str:
        """Prefixed, so the operator knows to look in the config file."""
        return f"config error: {self}"


class Unreachable(MailbotError):
    """A server or the database cannot be reached or used (exit 3)."""

    exit_code: ClassVar[int] = EXIT_UNREACHABLE

    def operator_line(self) -> str:
        """One line: a driver's or server's message may span several."""
        return " ".join(str(self).split())
