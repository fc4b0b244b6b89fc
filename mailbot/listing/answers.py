"""The JSON answers of the `http` and `command` sources, read strictly (docs/operators.md, "Listing").

Lookup: `{"listed": true|false, "since", "category", "reason", "network", "times_listed_before",
"last_delisted"}`, only `listed` required. Delist: `{"status": "delisted"|"not_listed", "at",
"message", "replayed"}`, only `status` required. Times are ISO 8601 (UTC when no offset).
Anything else (a missing `listed`, a number where text belongs, a huge text) is a permanent
error: an answer that cannot be read is never taken as "not listed".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from mailbot import clock
from mailbot.listing.base import DelistResult, DelistStatus, Listing, PermanentListingError
from mailbot.outgoing.sanitize import db_text

MAX_ANSWER_BYTES = 64 * 1024
MAX_TEXT = 2000
T = TypeVar("T")


def _fail(what: str, source: str, operation: str, ip: str) -> PermanentListingError:
    return PermanentListingError(f"unreadable answer: {what}", source=source, operation=operation, ip=ip)


def decode(body: bytes, source: str, operation: str, ip: str) -> dict[str, Any]:
    """The answer as a JSON object, or a permanent error saying why not."""
    if len(body) > MAX_ANSWER_BYTES:
        raise _fail(f"more than {MAX_ANSWER_BYTES} bytes", source, operation, ip)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(f"not JSON ({e})", source, operation, ip) from None
    if not isinstance(data, dict):
        raise _fail("not a JSON object", source, operation, ip)
    return data


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError("not a string")
    if len(v) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    return db_text(v) or None


def _time(v: Any) -> datetime | None:
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 40:
        raise TypeError("not an ISO 8601 time")
    t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _count(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1_000_000:
        raise TypeError("not a count")
    return v


def _field(data: dict[str, Any], key: str, read: Callable[[Any], T], ctx: tuple[str, str, str]) -> T:
    try:
        return read(data.get(key))
    except (TypeError, ValueError) as e:
        raise _fail(f"{key}: {e} (got {data.get(key)!r:.60})", *ctx) from None


def listing(data: dict[str, Any], ip: str, source: str) -> Listing:
    ctx = (source, "lookup", ip)
    listed = data.get("listed")
    if not isinstance(listed, bool):
        raise _fail('"listed" must be true or false', *ctx)
    return Listing(ip=ip, listed=listed, source=source,
                   since=_field(data, "since", _time, ctx), category=_field(data, "category", _text, ctx),
                   reason=_field(data, "reason", _text, ctx), network=_field(data, "network", _text, ctx),
                   times_listed_before=_field(data, "times_listed_before", _count, ctx),
                   last_delisted=_field(data, "last_delisted", _time, ctx))


def delisted(data: dict[str, Any], ip: str, key: str, source: str) -> DelistResult:
    ctx = (source, "delist", ip)
    try:
        status = DelistStatus(str(data.get("status")))
    except ValueError:
        raise _fail('"status" must be "delisted" or "not_listed"', *ctx) from None
    replayed = data.get("replayed", False)
    if not isinstance(replayed, bool):
        raise _fail('"replayed" must be true or false', *ctx)
    return DelistResult(ip=ip, key=key, source=source, status=status,
                        at=_field(data, "at", _time, ctx) or clock.utcnow(), replayed=replayed,
                        answer=_field(data, "message", _text, ctx))
