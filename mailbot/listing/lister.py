"""`Lister`: what the desk calls. A source behind a short cache, retries and the repeat rule.

- `lookup(ip)` never raises for the source's faults: it answers a `Listing` (cached for
  `listing.cache_seconds`, listed or not) or a `LookupFailed` to record as "lookup failed"
  (not cached: the next lookup asks again). Temporary failures are retried up to
  `listing.lookup_attempts` times; each try is bounded by `listing.timeout_seconds`.
- `delist(ip, key, actor, note)` retries temporary failures up to `listing.delist_attempts`
  times with jittered exponential backoff (`retry_base_seconds`, capped at `retry_max_seconds`,
  longer when the source sent Retry-After, still capped), always with the same key; then
  raises the last `TemporaryListingError`. A `PermanentListingError` is raised at once.
  A delist drops the IP from the cache.

Retrying is tenacity's; only this module imports it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from mailbot.config import ListingConfig
from mailbot.listing.base import (
    DelistResult,
    Listing,
    ListingError,
    ListingSource,
    LookupFailed,
    PermanentListingError,
    is_repeat,
    normalize_ip,
)
from mailbot.outgoing.sanitize import printable

log = logging.getLogger(__name__)
T = TypeVar("T")
CACHE_ENTRIES = 10_000


def _temporary(e: BaseException) -> bool:
    return isinstance(e, ListingError) and e.temporary


class _Wait:
    """Jittered exponential backoff, or the source's Retry-After when longer; never above the cap."""

    def __init__(self, base: float, cap: float) -> None:
        self.cap = cap
        self.backoff = wait_random_exponential(multiplier=base, max=cap)

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self.backoff(state))
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return min(max(wait, asked or 0.0), self.cap)


class Lister:
    def __init__(self, source: ListingSource, config: ListingConfig, *,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.source, self.config = source, config
        self.sleep, self.monotonic = sleep, monotonic
        self.cache: OrderedDict[str, tuple[float, Listing]] = OrderedDict()
        self.lock = threading.Lock()
        self.stats = {"lookups": 0, "cache_hits": 0, "lookup_failures": 0, "delists": 0, "delist_retries": 0}

    @property
    def name(self) -> str:
        return self.source.name

    def _retrying(self, attempts: int) -> Retrying:
        return Retrying(stop=stop_after_attempt(attempts), retry=retry_if_exception(_temporary), reraise=True,
                        wait=_Wait(self.config.retry_base_seconds, self.config.retry_max_seconds), sleep=self.sleep)

    def _cached(self, ip: str) -> Listing | None:
        with self.lock:
            hit = self.cache.get(ip)
            if hit is None:
                return None
            if hit[0] <= self.monotonic():
                del self.cache[ip]
                return None
            self.cache.move_to_end(ip)
            return hit[1]

    def _remember(self, listing: Listing) -> None:
        if self.config.cache_seconds <= 0:
            return
        with self.lock:
            self.cache[listing.ip] = (self.monotonic() + self.config.cache_seconds, listing)
            self.cache.move_to_end(listing.ip)
            while len(self.cache) > CACHE_ENTRIES:
                self.cache.popitem(last=False)

    def forget(self, ip: str) -> None:
        with self.lock:
            self.cache.pop(ip, None)

    def lookup(self, ip: str, fresh: bool = False) -> Listing | LookupFailed:
        """The listing of `ip`, or `LookupFailed`; `fresh` skips the cache (the sweep's re-check)."""
        try:
            ip = normalize_ip(ip)
        except ValueError as e:
            return LookupFailed(ip=ip, source=self.name, error=str(e), temporary=False)
        self.stats["lookups"] += 1
        hit = None if fresh else self._cached(ip)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return hit
        try:
            listing = self._retrying(self.config.lookup_attempts)(self.source.lookup, ip)
        except ListingError as e:
            self.stats["lookup_failures"] += 1
            log.warning("lookup of %s failed: %s", ip, printable(e.operator_line(), one_line=True))
            return LookupFailed(ip=ip, source=self.name, error=e.operator_line(), temporary=e.temporary)
        except Exception as e:  # a fault in the source itself must not stop a message either
            self.stats["lookup_failures"] += 1
            log.exception("lookup of %s failed in listing source %s", ip, self.name)
            return LookupFailed(ip=ip, source=self.name, error=f"listing source {self.name} failed: "
                                f"{type(e).__name__}", temporary=True)
        listing = replace(listing, ip=ip, repeat=is_repeat(listing, self.config.repeat_days))
        self._remember(listing)
        return listing

    def delist(self, ip: str, key: str, actor: str, note: str | None = None) -> DelistResult:
        """Delist `ip` once for `key`; raises `PermanentListingError`, or `TemporaryListingError`
        when every attempt failed for a temporary reason (the same key may be tried again later)."""
        try:
            ip = normalize_ip(ip)
        except ValueError as e:
            raise PermanentListingError(str(e), source=self.name, operation="delist", ip=ip) from None
        if not key or len(key) > 200 or not key.isprintable():
            raise PermanentListingError("the idempotency key must be 1 to 200 printable characters",
                                        source=self.name, operation="delist", ip=ip)
        self.stats["delists"] += 1

        def once() -> DelistResult:
            return self.source.delist(ip, key, actor, note)

        retrying = self._retrying(self.config.delist_attempts)
        try:
            result: DelistResult = retrying(once)
        finally:
            self.stats["delist_retries"] += max(0, retrying.statistics.get("attempt_number", 1) - 1)
            self.forget(ip)
        log.info("delist of %s (key %s) by %s at %s: %s%s", ip, printable(key, one_line=True),
                 printable(actor, one_line=True), self.name, result.status, " (replayed)" if result.replayed else "")
        return result

    def close(self) -> None:
        self.source.close()
