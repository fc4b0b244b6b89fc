"""Signed values of the portal, with the standard library's `hmac` (SHA-256): pure functions.

- A confirmation link's token, `<id>.<nonce>.<expires>.<mac>`: it names one request row and
  its random nonce, and says until when it holds. Only the key's holder can make one; a token
  that was changed in any character, or whose time is past, is refused (`TokenError`).
  Single use is the database's business (`PortalRequest.used_at`), not the token's.
- A form's CSRF token: the MAC of the browser's random cookie and what the form is for (and,
  for the confirmation, the link's token). Another site can make a browser send the cookie, but
  cannot read it, so it cannot write the matching field.

Each MAC is over a purpose label and the value, so a value signed for one use is never
accepted for another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TOKEN = re.compile(r"^([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{16,43})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")
COOKIE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class TokenError(ValueError):
    """A link that is not ours, changed, or expired; `expired` tells the last apart (to say so)."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class Link:
    request_id: int
    nonce: str
    expires: int
    """Unix time after which the link no longer holds."""


def _mac(key: bytes, purpose: str, *parts: str) -> str:
    msg = "\x00".join((purpose, *parts)).encode()
    return base64.urlsafe_b64encode(hmac.new(key, msg, hashlib.sha256).digest()).rstrip(b"=").decode()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def new_cookie() -> str:
    return secrets.token_urlsafe(32)


def sign_link(key: bytes, link: Link) -> str:
    body = f"{link.request_id}.{link.nonce}.{link.expires}"
    return f"{body}.{_mac(key, 'confirm-link', body)}"


def read_link(key: bytes, token: str, now: float) -> Link:
    """The link a token names, or `TokenError`: malformed, not signed with `key`, or expired."""
    m = TOKEN.match(token or "")
    if m is None:
        raise TokenError("not a confirmation link")
    body = token.rpartition(".")[0]
    if not hmac.compare_digest(_mac(key, "confirm-link", body), m.group(4)):
        raise TokenError("the link's signature does not match")
    link = Link(int(m.group(1)), m.group(2), int(m.group(3)))
    if link.expires < now:
        raise TokenError("the link has expired", expired=True)
    return link


def csrf_token(key: bytes, cookie: str, purpose: str, token: str = "") -> str:
    """The hidden field a form of ours carries for the browser holding `cookie`."""
    return _mac(key, "csrf-" + purpose, cookie, token)


def csrf_ok(key: bytes, cookie: str | None, field: str | None, purpose: str, token: str = "") -> bool:
    if not cookie or not field or not COOKIE.match(cookie):
        return False
    return hmac.compare_digest(csrf_token(key, cookie, purpose, token), field)
