"""[listing]: no section means no source and no lookups; a wrong key is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailbot.app import open_listing
from mailbot.config import ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[1]
MINIMAL: dict[str, Any] = {"mailbox": {"source": "maildir", "maildir_path": "m"},
                           "outgoing": {"transport": "maildir", "maildir_path": "o"}}


def test_without_a_listing_section_there_is_no_lister() -> None:
    """An empty list must never tell a sender they are clean: no source, no lookups at all."""
    config = parse(MINIMAL, environ={})
    assert config.listing.source is None
    assert open_listing(config, None) is None
    assert open_listing(load(ROOT / "config.example.toml", environ={}), None) is None


@pytest.mark.parametrize(("listing", "message"), [
    ({"source": "ldap"}, "listing.source: "),
    ({"source": "dnsbl"}, 'listing.dnsbl_zone: required when source = "dnsbl"'),
    ({"source": "dnsbl", "dnsbl_zone": "bad zone!"}, "listing.dnsbl_zone: "),
    ({"source": "dnsbl", "dnsbl_zone": "bl.example", "dnsbl_nameserver": "ns.example"},
     "listing.dnsbl_nameserver: must be an IP address"),
    ({"source": "http"}, 'listing.http_url: required when source = "http"'),
    ({"source": "http", "http_url": "list.example.org"}, "listing.http_url: "),
    ({"source": "command"}, 'listing.command: required when source = "command"'),
    ({"source": "table", "cache_seconds": -1}, "listing.cache_seconds: "),
    ({"source": "table", "retry_base_seconds": 10, "retry_max_seconds": 1}, "listing.retry_max_seconds: "),
    ({"source": "http", "http_url": "https://x.example", "token": "abc"}, "listing.token: never in the TOML"),
    ({"source": "table", "cache": 5}, "listing.cache: unknown key"),
])
def test_a_wrong_listing_key_is_named(listing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse({**MINIMAL, "listing": listing}, environ={})
    assert message in str(e.value)
    assert "abc" not in str(e.value)


def test_the_environment_overrides_listing_keys_and_the_token_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("t0ken\n")
    config = parse({**MINIMAL, "listing": {"source": "http", "http_url": "https://list.example/api"}},
                   base_dir=str(tmp_path),
                   environ={"MAILBOT_LISTING_CACHE_SECONDS": "5", "MAILBOT_LISTING_TOKEN_FILE": "tok"})
    assert config.listing.cache_seconds == 5
    assert config.listing.token({}, base=tmp_path) == "t0ken"
    assert config.listing.token({"MAILBOT_LISTING_TOKEN": "env"}, base=tmp_path) == "env"
    missing = parse({**MINIMAL, "listing": {"source": "http", "http_url": "https://l.example", "token_file": "no"}},
                    base_dir=str(tmp_path), environ={})
    with pytest.raises(ConfigError, match=r"listing\.token_file: cannot read"):
        open_listing(missing, None, environ={})
