"""The command line, one module per audience: `operators` (run the daemon), `staff` (tickets),
`outcomes` (staff ending a request: delist, conditional, decline), `templates` (their
authors), `setup` (init and the demo), `listing` (the desk's own block list), `portal` (the
self-service delist portal). `base` holds the group and the error mapping: exit codes 0 ok,
1 a check or command failed, 2 configuration error, 3 a server or the database could not be
reached (drawn in mailbot/errors.py).
"""

from mailbot.cli import operators, outcomes, portal, setup, staff, templates  # noqa: F401  (they register their commands)
from mailbot.cli.base import main
from mailbot.cli.listing import listing

main.add_command(listing)  # mailbot listing add|remove|show|import|export

__all__ = ["main"]
