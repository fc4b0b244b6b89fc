"""Crash points for the crash-safety tests. Off unless MAILBOT_FAULT is set.

`MAILBOT_FAULT=after_commit` makes the process die (exit 137, as SIGKILL
would, with no clean-up: no rollback, no logout, no flush) the first time
it reaches `faults.point("after_commit")`. `MAILBOT_FAULT=after_parse:poison`
dies there only for a message whose key (its Message-ID) contains "poison",
so a test can make one message kill the process again and again.

The points, in the order a message meets them:

- `while_fetching`  a batch's bytes are read from the server, not stored (key: the batch's Message-IDs)
- `after_fetch`     a batch of raw messages is committed, nothing parsed yet
- `after_read`      inside the processing transaction (a batch of fresh messages, or one retry),
                    every message of it read (headers, extraction, decisions), nothing written
                    (key: the batch's Message-IDs)
- `after_parse`     inside the processing transaction, one message's rules applied (its ticket
                    inserted, its other rows pending), not committed
- `after_queue`     inside the processing transaction, just after the reply was queued
- `before_commit`   inside the processing transaction, every row of the batch written (a
                    statement per table), not committed
- `after_commit`    the outcomes and replies of the batch (or the retried message) are committed;
                    the server not told
- `before_mark`     about to move/flag a finished message on the server
- `after_mark`      moved/flagged on the server; our note of it not yet committed
- `after_smtp_250`  the SMTP server accepted a reply; the outbox row not yet marked sent
"""

from __future__ import annotations

import os

POINTS = ("while_fetching", "after_fetch", "after_read", "after_parse", "after_queue", "before_commit", "after_commit",
          "before_mark", "after_mark", "after_smtp_250")


def armed() -> bool:
    """A crash point is set (so a key worth computing may be asked for)."""
    return bool(os.environ.get("MAILBOT_FAULT"))


def point(name: str, key: str | None = None) -> None:
    spec = os.environ.get("MAILBOT_FAULT")
    if not spec:
        return
    wanted, _, match = spec.partition(":")
    if wanted == name and (not match or (key is not None and match in key)):
        os._exit(137)
