"""Logging: human-readable lines on a terminal, JSON lines when configured.

A log call names what it concerns with `extra={"message_id": ..., "ticket": ...}`;
the JSON form carries those as fields. Secrets never reach a log line: the
config's passwords are not in any message mailbot writes.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from mailbot.outgoing.sanitize import printable

CONTEXT = ("message_id", "ticket", "mailbox", "outbox_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": printable(record.getMessage()),
        }
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One log record, one line: what a message put into the text (a Message-ID, a subject, an
    address) cannot add a line, move the cursor or retitle the terminal (`sanitize.printable`).
    A traceback below it keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, one_line=True)
        return super().formatMessage(record)


def setup(fmt: str = "text", level: str = "INFO") -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "imapclient", "mailparser"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
