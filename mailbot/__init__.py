"""mailbot: the daemon behind a mailbox provider's delist@ address."""

__version__ = "0.1.0"

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
"""Where the package lies: its data (samples, packaged templates, migrations) is found from here."""
