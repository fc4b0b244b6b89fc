"""Shared fixtures: the real servers of tests/servers.py (Dovecot, SMTP, databases)."""

from app import cli_desk, engine, make_world, world  # noqa: F401  (mailbot wired to those servers)
from listing_servers import dnsbl, list_service  # noqa: F401  (the DNS server and list service of #17)
from portal_app import mailbot_portal, make_portal, portal_world  # noqa: F401  (the portal of #19)
from servers import (  # noqa: F401  (fixtures are found by name)
    database_url,
    dovecot,
    dovecot_server,
    smtp_server,
)
