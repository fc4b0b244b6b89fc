"""OAuth2 access tokens for Microsoft 365 and Google Workspace mailboxes.

Like a mail client's "password command", mailbot runs the configured
`token_command` (e.g. a script around msal or oauth2l that refreshes as
needed) and uses what it prints as the bearer token for XOAUTH2. The
command's output is a secret: it never reaches a log or an error message.
"""

from __future__ import annotations

import shlex
import subprocess


class TokenError(Exception):
    """The token command failed; the message names the key, never the token."""


def token(command: str | None, key: str) -> str:
    if not command:
        raise TokenError(f"{key}: auth = \"oauth2\" needs a token_command that prints an access token")
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TokenError(f"{key}: token command could not run: {e.__class__.__name__}") from None
    if done.returncode != 0:
        raise TokenError(f"{key}: token command exited with {done.returncode}: {done.stderr.strip()[:200]}")
    value = done.stdout.strip()
    if not value:
        raise TokenError(f"{key}: token command printed nothing")
    return value


def xoauth2(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64)."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"
