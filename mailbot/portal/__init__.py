"""The self-service delist portal (issue #19): the procedure's second door, on the same desk.

Senders refused with 5.7.606-5.7.649 delist themselves here: they enter the address that got
the rejection and the IP, receive a signed link by mail, open it and press "Delist IP".

Contract
--------
`open_portal(config, host, port, environ) -> (Portal, Pages, Sender)` builds what `mailbot
portal` serves with `web.make_app(portal, pages)`:

- `service.Portal.submit` answers the form with one bit about the list: the IP is listed in
  a portal category (`[portal] categories`, by default what the policy redirects here) and a
  confirmation link was mailed, or it is not (and the sender is told of delist@). Limits per
  client address, address, IP and the IP's network come first (`limits.py`), with Retry-After.
- `service.Portal.view` shows a link's state and changes nothing; `press.press` does the
  delist through `Lister.delist` (key derived from the request, actor "portal", the address
  and client address in the note and the ticket events), marks the link used once, records
  it on a ticket (the IP's redirected ticket, else a new one) and queues the result mail.
  A repeat listing (within `listing.repeat_days`) or one outside the portal's categories is
  never delisted here: its ticket opens for staff with an SLA clock.
- Links are HMAC-signed (`signing.py`) with the key from `[portal] secret_file` or
  MAILBOT_PORTAL_SECRET, expire after `[portal] link_hours`, and point at `[portal] url`.
- `web.py` is the HTTP face (Starlette): no script, no reflected input, no open redirect,
  CSRF-checked POSTs, strict security headers; pages are `templates/portal/` (`pages.py`).
- Mail leaves through the outbox (`outgoing.mailer`); `sender.Sender` flushes it at once.

Needs a listing source (`[listing] source`): without one nothing can be looked up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mailbot.config import Config, ConfigError, database_url
from mailbot.config.portal import PortalSecretError
from mailbot.listing import open_lister
from mailbot.portal.pages import Pages
from mailbot.portal.sender import Sender
from mailbot.portal.service import LANGUAGES, Portal
from mailbot.store.engine import create_schema, make_engine

__all__ = ["Pages", "Portal", "Sender", "open_portal"]


def open_portal(config: Config, host: str, port: int,
                environ: Mapping[str, str] | None = None) -> tuple[Portal, Pages, Sender]:
    """The portal on the configured database and listing source; raises `ConfigError` for what
    the operator must fix (no listing source, no signing key)."""
    try:
        key = config.portal.secret(environ, base=Path(config.base_dir))
    except PortalSecretError as e:
        raise ConfigError(str(e)) from None
    engine = make_engine(database_url(config))
    lister = open_lister(config.listing, Path(config.base_dir), engine, environ)
    if lister is None:
        engine.dispose()
        raise ConfigError("portal: [listing] source is not set: the portal has no list to look IPs up in")
    create_schema(engine)
    sender = Sender(config.outgoing, Path(config.base_dir), engine)
    portal = Portal(config, engine, lister, key, config.portal.base_url(host, port), kick=sender.kick)
    t = config.templates
    pages = Pages(config.path(t.dir) if t.dir else None, LANGUAGES)
    return portal, pages, sender
