"""mailbot: the daemon behind a mailbox provider's delist@ address."""

__version__ = "0.1.0"
