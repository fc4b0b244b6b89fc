"""What the desk's rules read of the configuration: the sections (or the single keys) triage
needs, picked out of the file by the wiring (`mailbot.app.triage_settings`), so that no rule
can reach the mailbox's password or the database's URL."""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.config import DeskConfig, ListingConfig, PolicyConfig, RepliesConfig, SlaConfig


@dataclass(frozen=True)
class TriageSettings:
    """What triage reads of the configuration, and no more (the wiring in `mailbot.app` picks
    it out of the file's sections)."""

    desk: DeskConfig
    """Its staff (whose mail may carry commands), name and time zone."""
    own_addresses: frozenset[str]
    """Mail from these is never answered (the desk's own, and its From)."""
    policy: PolicyConfig
    replies: RepliesConfig
    """The reply guard: caps and the trusted Authentication-Results."""
    sla: SlaConfig
    listing: ListingConfig
    portal_url: str | None
    """`[portal] url`: where redirect replies send a sender (None: the policy's page)."""
    max_message_bytes: int
    """`mailbox.max_message_bytes`, named in the reason a cut message is quarantined."""
