"""OAuth2 (XOAUTH2) with the token from a configured command, as Microsoft 365
and Google Workspace need; a refused or missing token is one clear error."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from servers import free_port

from mailbot.config import parse
from mailbot.outgoing.transports import SmtpTransport, TransportFault
from mailbot.source import oauth


class XOAuth2Handler:
    def __init__(self, good_token: str) -> None:
        self.good_token = good_token
        self.seen: list[str] = []
        self.mail: list[bytes] = []

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        response = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        self.seen.append(response)
        ok = response == f"user=delist@example.org\x01auth=Bearer {self.good_token}\x01\x01"
        return AuthResult(success=ok, handled=False, auth_data="delist@example.org" if ok else None)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mail.append(bytes(envelope.original_content or b""))
        return "250 OK"


def smtp_config(tmp_path: Path, port: int, token_script: str) -> Any:
    return parse({"mailbox": {"source": "maildir", "maildir_path": "in"},
                  "outgoing": {"host": "127.0.0.1", "port": port, "security": "none", "user": "delist@example.org",
                               "auth": "oauth2", "token_command": token_script}},
                 base_dir=str(tmp_path), environ={}).outgoing


def script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "token.py"
    p.write_text(body)
    return f"{sys.executable} {p}"


@pytest.fixture
def xoauth_server() -> Any:
    handler = XOAuth2Handler("tok-123")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, auth_require_tls=False,
                            authenticator=lambda *a: AuthResult(success=False))
    controller.start()
    yield handler, port
    controller.stop()


def test_smtp_sends_with_the_token_the_command_prints(tmp_path: Path, xoauth_server: Any) -> None:
    handler, port = xoauth_server
    t = SmtpTransport(smtp_config(tmp_path, port, script(tmp_path, "print('tok-123')")))
    t.send("delist@example.org", ["erik@contoso.example"], b"Subject: x\r\n\r\nhi\r\n")
    t.close()
    assert handler.mail and handler.seen == ["user=delist@example.org\x01auth=Bearer tok-123\x01\x01"]


def test_a_refused_token_is_a_fault_of_the_transport_naming_server_and_user_but_not_the_token(
        tmp_path: Path, xoauth_server: Any) -> None:
    # not a failure of the mail: the outbox holds the queue until a token is accepted
    _handler, port = xoauth_server
    t = SmtpTransport(smtp_config(tmp_path, port, script(tmp_path, "print('expired-tok')")))
    with pytest.raises(TransportFault) as e:
        t.send("delist@example.org", ["erik@contoso.example"], b"Subject: x\r\n\r\nhi\r\n")
    assert f"127.0.0.1:{port} (user delist@example.org): OAuth2 token refused (535" in str(e.value)
    assert "outgoing.token_command" in str(e.value) and "expired-tok" not in str(e.value)


def test_a_failing_token_command_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(oauth.TokenError, match=r"mailbox\.token_command: token command exited with 3"):
        oauth.token(script(tmp_path, "import sys; sys.stderr.write('no refresh token'); sys.exit(3)"),
                    "mailbox.token_command")
    with pytest.raises(oauth.TokenError, match="needs a token_command"):
        oauth.token(None, "mailbox.token_command")
