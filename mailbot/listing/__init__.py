"""The listing sources and the delist action: does the list hold this IP, and lift it, once.

Contract
--------
A `ListingSource` (`base.py`) answers two questions about one IP:

- `lookup(ip) -> Listing`: listed or not; since when, category, the reason (for staff only:
  never shown to a sender unless a template asks), the listed network, where the listing came
  from, the source's name, how many earlier listings of the IP ended in a delisting, and the
  last delisting.
- `delist(ip, key, actor, note) -> DelistResult`: delisted, or not listed when asked. The
  source receives the key and keeps it: a retried or repeated call with the same key never
  delists twice and returns the first answer with `replayed` set (two daemons at once
  included). Use `delist_key(ticket_ref, clock)` for a ticket's key.

Both raise `TemporaryListingError` (retry later, with backoff) or `PermanentListingError`
(asking again gives the same answer). The desk does not call sources directly but through
`Lister` (`lister.py`): a short cache in front of lookups, retries, the repeat rule, and a
lookup that never raises (`LookupFailed` is a value to record as "lookup failed").

Sources, chosen by `[listing] source` (`config.ListingConfig`):

    table    mailbot's own tables (`table.py`), managed with `mailbot listing ...` (`commands.py`,
             `admin.py`, `csvfile.py`)
    dnsbl    an RFC 5782 DNS zone (`dnsbl.py`); lookups only, a delist is a permanent error
    http     the provider's list service (`http_api.py`), contract in docs/operators.md
    command  an operator's program, JSON on stdin and stdout (`program.py`)

No source configured: `open_lister` gives None, and there are no lookups at all; in
particular nothing may then tell a sender "not listed".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import Engine

from mailbot.config import ConfigError, ListingConfig
from mailbot.listing.base import (
    DelistResult,
    DelistStatus,
    Listing,
    ListingError,
    ListingSource,
    LookupFailed,
    PermanentListingError,
    TemporaryListingError,
    delist_key,
    is_repeat,
    normalize_ip,
)
from mailbot.listing.lister import Lister

__all__ = [
    "DelistResult",
    "DelistStatus",
    "Lister",
    "Listing",
    "ListingError",
    "ListingSource",
    "LookupFailed",
    "PermanentListingError",
    "TemporaryListingError",
    "delist_key",
    "is_repeat",
    "make_source",
    "normalize_ip",
    "open_lister",
]


def make_source(lc: ListingConfig, base_dir: Path, engine: Engine | None,
                environ: Mapping[str, str] | None = None) -> ListingSource | None:
    """The configured source, or None when `[listing] source` is not set. `base_dir`: where the
    config file is (relative paths in it start there); `engine` is the desk's database (needed
    by the table source only)."""
    if lc.source is None:
        return None
    if lc.source == "table":
        from mailbot.listing.table import TableSource

        if engine is None:
            raise ValueError("the table listing source needs the desk's database engine")
        return TableSource(engine)
    if lc.source == "dnsbl":
        from mailbot.listing.dnsbl import DnsblSource

        return DnsblSource(lc.dnsbl_zone, lc.dnsbl_nameserver or None, lc.dnsbl_port, lc.timeout_seconds)
    if lc.source == "http":
        from mailbot.listing.http_api import HttpSource

        token = lc.token(dict(environ) if environ is not None else None, base=base_dir)
        return HttpSource(lc.http_url, token, lc.timeout_seconds)
    from mailbot.listing.program import ProgramSource

    argv = list(lc.command)
    if "/" in argv[0]:
        argv[0] = str(base_dir / Path(argv[0]).expanduser())  # an absolute path stays itself
        if not Path(argv[0]).is_file():
            raise ConfigError(f"listing.command: {argv[0]} does not exist")
    return ProgramSource(argv, lc.timeout_seconds)


def open_lister(lc: ListingConfig, base_dir: Path, engine: Engine | None,
                environ: Mapping[str, str] | None = None) -> Lister | None:
    """The desk's `Lister`, or None when no source is configured (then: no lookups, no "not listed")."""
    source = make_source(lc, base_dir, engine, environ)
    return Lister(source, lc) if source is not None else None
