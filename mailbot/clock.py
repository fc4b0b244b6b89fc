"""The one clock. Times are timezone-aware UTC, stored as UTC; tests move it with time-machine,
`mailbot demo` with `moved_forward` (simulated time, this process only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_UTC = ZoneInfo("UTC")
_ahead = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(UTC) + _ahead


@contextmanager
def moved_forward(by: timedelta) -> Iterator[None]:
    """Inside the block `utcnow()` runs `by` ahead: simulated time for a demonstration, never for a desk.

    Process-wide and not thread-safe: for a single-threaded command such as
    `mailbot demo`, whose output says the time is simulated.
    """
    global _ahead
    before = _ahead
    _ahead = before + by
    try:
        yield
    finally:
        _ahead = before


def local(dt: datetime | None, zone: ZoneInfo) -> str:
    """A stored UTC time as the configured zone shows it, e.g. "2026-11-30 10:00 CET"."""
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def in_utc(dt: datetime | None) -> str:
    """The same time in UTC, e.g. "2026-11-30 09:00 UTC": for senders, who may be anywhere."""
    return local(dt, _UTC)
