"""The one clock. Times are timezone-aware UTC, stored as UTC; tests move it with time-machine."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_UTC = ZoneInfo("UTC")


def utcnow() -> datetime:
    return datetime.now(UTC)


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
