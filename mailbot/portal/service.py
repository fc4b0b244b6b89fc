"""The portal's work, without HTTP: the form's submission and the confirmation link's view.

`Portal` holds what every request needs (the configuration, the database, the `Lister`, a
mailer per language, the signing key, where links point). Its answers are values that the web
layer turns into pages (`web.py`); nothing here reads a header or writes HTML.

`submit(address, ip, client, language)`:
  invalid (which fields) → limited (a `Limited`, with Retry-After) → looked up: listed in a
  portal category → the request row, the signed link queued as mail in the same transaction
  ("mailed"); anything else → "refused", one answer for "not listed", "listed in another
  category" and "the lookup said nothing useful", so the form tells no more than that bit.
`view(token)`: what the confirmation page shows for a link: bad, expired, used (and how it
  ended), or ready (the IP). A view never changes anything: mail scanners open links.
Pressing the button is `press.py`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailbot import clock
from mailbot.config import Config
from mailbot.desk.policy import Policy, code_matches
from mailbot.identity import person
from mailbot.listing import Lister, LookupFailed, normalize_ip
from mailbot.outgoing import sanitize
from mailbot.outgoing.mailer import AUTOMATIC, Mailer
from mailbot.outgoing.render import Renderer
from mailbot.portal import limits, metrics, signing
from mailbot.store.engine import transaction
from mailbot.store.portal_tables import PortalRequest
from mailbot.store.states import MailKind

log = logging.getLogger(__name__)
LANGUAGES = ("en", "de")
MAX_ADDRESS = 254


@dataclass(frozen=True)
class Submitted:
    answer: Literal["invalid", "limited", "mailed", "refused", "unavailable"]
    problems: tuple[str, ...] = ()
    """For "invalid": "address", "ip", "reserved" (a private or reserved IP), "own" (the desk's own address)."""
    limited: limits.Limited | None = None


@dataclass(frozen=True)
class Viewed:
    state: Literal["bad", "expired", "used", "ready"]
    ip: str = ""
    outcome: str | None = None
    request_id: int = 0
    language: str = "en"


def portal_categories(config: Config) -> tuple[str, ...]:
    """`[portal] categories`, or the codes the policy sends to the portal (its redirect rules)."""
    if config.portal.categories is not None:
        return config.portal.categories
    return tuple(c for rule in Policy(config.policy).rules if rule.action == "redirect" for c in rule.codes)


def in_portal_category(category: str | None, categories: tuple[str, ...]) -> bool:
    if not category:
        return False
    cat = category.strip()
    return any(c.strip().casefold() == cat.casefold() for c in categories) or \
        (cat[:1].isdigit() and code_matches(categories, cat))


@dataclass
class Portal:
    config: Config
    engine: Engine
    lister: Lister
    key: bytes
    base_url: str
    kick: Callable[[], None] = lambda: None
    """Called after a commit that queued mail: the sender thread sends it now, not at the next flush."""
    wall: Callable[[], float] = time.time
    mailers: dict[str, Mailer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.config.templates
        override = self.config.path(t.dir) if t.dir else None
        for lang in LANGUAGES:
            self.mailers[lang] = Mailer(Renderer(override, lang), self.config.outgoing, self.config.desk)
        self.categories = portal_categories(self.config)
        self.policy = Policy(self.config.policy)
        self.trusted = limits.trusted_networks(self.config.portal.trusted_proxies)
        self.flood = limits.Flood(self.config.portal.requests_per_minute)

    @property
    def template_dir(self) -> Path | None:
        t = self.config.templates
        return self.config.path(t.dir) if t.dir else None

    def link(self, token: str) -> str:
        return f"{self.base_url}confirm/{token}"

    def validate(self, address: str, ip: str) -> tuple[str | None, str | None, tuple[str, ...]]:
        problems: list[str] = []
        addr = sanitize.address(address.strip()) if len(address) <= MAX_ADDRESS else None
        if addr is None:
            problems.append("address")
        elif addr.lower() in self.config.own_addresses:
            problems.append("own")
            addr = None
        try:
            norm: str | None = normalize_ip(ip)
        except ValueError:
            norm = None
            problems.append("ip")
        if norm is not None and not self.policy.delistable(norm):
            problems.append("reserved")
            norm = None
        return addr, norm, tuple(problems)

    def submit(self, address: str, ip: str, client: str, language: str) -> Submitted:
        addr, norm, problems = self.validate(address, ip)
        if problems or addr is None or norm is None:
            metrics.REFUSALS.labels("invalid").inc()
            return Submitted("invalid", problems)
        pc = self.config.portal
        now = clock.utcnow()
        key = limits.client_key(client, pc.client_v6)
        who, network = person(addr), limits.network_of(norm, pc)
        # The count and the row that makes it one more are one serialised transaction: a burst
        # of requests cannot all read "under the limit" before any of them is written.
        with transaction(self.engine) as s:
            limits.serialise(s, (key, who, norm, network))
            hit = limits.over_limit(s, pc, now, client=key, person=who, ip=norm, network=network)
            if hit is None:
                row = PortalRequest(created_at=now, client=key, address=addr, person=who, ip=norm, network=network,
                                    language=language, answer="pending")
                s.add(row)
                s.flush()
        if hit is not None:
            metrics.REFUSALS.labels(f"limit_{hit.rule}").inc()
            log.warning("portal: %s limit reached (client %s), retry after %ss", hit.rule, key, hit.retry_after)
            return Submitted("limited", limited=hit)
        listing = self.lister.lookup(norm)
        answer: Literal["mailed", "refused", "unavailable"] = "refused"
        with transaction(self.engine) as s:
            row = s.merge(row)
            if isinstance(listing, LookupFailed):
                row.answer, answer = "lookup_failed", "unavailable"
            elif listing.listed and in_portal_category(listing.category, self.categories):
                row.answer, answer = "mailed", "mailed"
                row.nonce = signing.new_nonce()
                row.expires_at = now + timedelta(hours=pc.link_hours)
                s.flush()
                self._mail_link(s, row, now)
            else:
                row.answer = "refused"
        if answer == "mailed":
            self.kick()
        else:
            metrics.REFUSALS.labels("lookup_failed" if answer == "unavailable" else "not_in_portal_category").inc()
        log.info("portal request #%s: %s for %s from client %s", row.id, row.answer, norm, key)
        return Submitted(answer)

    def token_of(self, row: PortalRequest) -> str:
        assert row.id is not None and row.nonce is not None and row.expires_at is not None
        return signing.sign_link(self.key, signing.Link(row.id, row.nonce, int(row.expires_at.timestamp())))

    def _mail_link(self, s: Session, row: PortalRequest, now: datetime) -> None:
        zone = self.config.desk.zone
        context = {"desk_name": self.config.desk.name, "ip": row.ip, "ref": "",
                   "link": self.link(self.token_of(row)), "expires_local": clock.local(row.expires_at, zone),
                   "link_hours": f"{self.config.portal.link_hours:g}",
                   "delist_address": self.config.outgoing.from_address}
        mailer = self.mailers.get(row.language, self.mailers["en"])
        mailer.to_person(s, MailKind.PORTAL_CONFIRM, context, row.address, kind=MailKind.PORTAL_CONFIRM,
                         ticket_id=None, ticket_ref=None, now=now, dedupe=f"portal_confirm:{row.id}",
                         auto_submitted=AUTOMATIC)
        metrics.MAILED.inc()

    def read(self, token: str) -> tuple[PortalRequest | None, Viewed]:
        """The request a link names, and what its page shows."""
        try:
            link = signing.read_link(self.key, token, self.wall())
        except signing.TokenError as e:
            return None, Viewed("expired" if e.expired else "bad")
        with Session(self.engine) as s:
            row = s.get(PortalRequest, link.request_id)
        if row is None or row.nonce != link.nonce or row.answer != "mailed":
            return None, Viewed("bad")
        state: Literal["used", "ready"] = "used" if row.used_at is not None else "ready"
        return row, Viewed(state, row.ip, row.outcome, link.request_id, row.language)

    def view(self, token: str) -> Viewed:
        return self.read(token)[1]
