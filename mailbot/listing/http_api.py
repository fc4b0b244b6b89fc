"""The `http` source: the provider's own list service, through httpx (docs/operators.md, "Listing").

    GET  {base}/listings/{ip}          → 200 {"listed": ..., ...}            (answers.listing)
    POST {base}/listings/{ip}/delist   → 200 {"status": "delisted", ...}     (answers.delisted)
         Idempotency-Key: <key>        body {"key", "actor", "note"}

Both with `Authorization: Bearer <token>` when a token is configured (read from
`listing.token_file` or `MAILBOT_LISTING_TOKEN`, never from the TOML, never in a message or
a log line). A timeout, a lost connection, 408, 409 (the same key still being worked on),
425, 429 and 5xx are temporary (with the server's Retry-After); any other status, a
redirect, or an answer that cannot be read is permanent. Only this module imports httpx.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from mailbot import __version__
from mailbot.listing import answers
from mailbot.listing.base import DelistResult, Listing, PermanentListingError, TemporaryListingError

NAME = "http"
TEMPORARY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 3600.0


class HttpSource:
    def __init__(self, base: str, token: str | None, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.name = NAME
        self.base = base.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": f"mailbot/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(timeout=timeout, headers=headers, follow_redirects=False, transport=transport)

    def __repr__(self) -> str:  # the client holds the token: never in a repr
        return f"HttpSource({self.base!r})"

    def _url(self, ip: str, *rest: str) -> str:
        return "/".join([self.base, "listings", quote(ip, safe=":"), *rest])

    def _send(self, operation: str, ip: str, request: httpx.Request) -> bytes:
        where = f"{request.method} {request.url}"
        try:
            response = self.client.send(request)
        except httpx.TimeoutException:
            raise TemporaryListingError(f"{where}: no answer within the timeout", source=self.name,
                                        operation=operation, ip=ip) from None
        except httpx.HTTPError as e:
            raise TemporaryListingError(f"{where}: {type(e).__name__}: {' '.join(str(e).split())[:200]}",
                                        source=self.name, operation=operation, ip=ip) from None
        if response.status_code == 200:
            return response.content
        said = f"{where}: HTTP {response.status_code} {response.reason_phrase}"
        if response.status_code in TEMPORARY_STATUS:
            raise TemporaryListingError(said, source=self.name, operation=operation, ip=ip,
                                        retry_after=retry_after(response.headers.get("Retry-After")))
        if response.status_code in (401, 403):
            said += " (check the token: listing.token_file or MAILBOT_LISTING_TOKEN)"
        raise PermanentListingError(said, source=self.name, operation=operation, ip=ip)

    def lookup(self, ip: str) -> Listing:
        body = self._send("lookup", ip, self.client.build_request("GET", self._url(ip)))
        return answers.listing(answers.decode(body, self.name, "lookup", ip), ip, self.name)

    def delist(self, ip: str, key: str, actor: str, note: str | None) -> DelistResult:
        request = self.client.build_request("POST", self._url(ip, "delist"), headers={"Idempotency-Key": key},
                                            json={"key": key, "actor": actor, "note": note})
        body = self._send("delist", ip, request)
        return answers.delisted(answers.decode(body, self.name, "delist", ip), ip, key, self.name)

    def close(self) -> None:
        self.client.close()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - datetime.now(UTC)).total_seconds(), MAX_RETRY_AFTER))
