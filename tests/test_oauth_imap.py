"""IMAP XOAUTH2 against a real Dovecot whose oauth2 passdb asks a local token
introspection endpoint, as Microsoft 365 and Google Workspace mailboxes need."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

import pytest
from app import imap_config, sample
from servers import DovecotServer, _find_binary, unavailable

from mailbot.app import Desk
from mailbot.source.base import SourceError

USER = "delist@example.org"
GOOD = "good-token-123"


class Introspection(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        token = parse_qs(body).get("token", [""])[0]
        Introspection.seen.append(token)
        answer = {"active": True, "username": USER} if token == GOOD else {"active": False}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class OAuthDovecot(DovecotServer):
    introspection_port = 0

    def _write_config(self) -> None:
        super()._write_config()
        (self.root / "oauth2.conf").write_text(
            f"introspection_mode = post\nintrospection_url = http://127.0.0.1:{self.introspection_port}/\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n")
        text = self.config_path.read_text()
        text = text.replace("auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer")
        text = text.replace("passdb {\n  driver = static", f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 "
                            f"oauthbearer\n  args = {self.root}/oauth2.conf\n}}\npassdb {{\n  driver = static", 1)
        self.config_path.write_text(text)


@pytest.fixture
def oauth_dovecot() -> Iterator[OAuthDovecot]:
    binary, doveadm = _find_binary("dovecot"), _find_binary("doveadm")
    if binary is None or doveadm is None:
        unavailable("dovecot missing: install dovecot-imapd (scripts/install-test-deps)")
    http = ThreadingHTTPServer(("127.0.0.1", 0), Introspection)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    OAuthDovecot.introspection_port = http.server_address[1]
    root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-oauth-"))
    root.chmod(0o755)
    server = OAuthDovecot(binary, doveadm, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        http.shutdown()
        http.server_close()
        shutil.rmtree(root, ignore_errors=True)


def token_command(tmp_path: Path, token: str) -> str:
    script = tmp_path / "token.py"
    script.write_text(f"print({token!r})")
    return f"{sys.executable} {script}"


def config(tmp_path: Path, server: OAuthDovecot, smtp: Any, db: str, token: str) -> Any:
    class Box:
        host, port, user, password = server.host, server.port, USER, "unused"

    return imap_config(tmp_path, Box, smtp, db, mailbox={"auth": "oauth2",
                                                         "token_command": token_command(tmp_path, token)})


def test_the_mailbox_is_read_with_an_oauth2_token_from_the_command(tmp_path: Path, oauth_dovecot: OAuthDovecot,
                                                                  smtp_server: Any) -> None:
    desk = Desk(config(tmp_path, oauth_dovecot, smtp_server, f"sqlite:///{tmp_path}/m.db", GOOD))
    from imapclient import IMAPClient

    with IMAPClient(oauth_dovecot.host, port=oauth_dovecot.port, ssl=False) as c:
        c.oauth2_login(USER, GOOD)
        c.append("INBOX", sample("01-banned-sender-attached.eml"))
    Introspection.seen.clear()
    polled, _ = desk.run_once()
    assert polled.fetch.stored == 1 and smtp_server.wait_for(1)
    assert GOOD in Introspection.seen  # the server asked the token endpoint: no password was involved
    desk.engine.dispose()


def test_a_refused_token_is_one_clear_error_naming_server_and_user(tmp_path: Path, oauth_dovecot: OAuthDovecot,
                                                                  smtp_server: Any) -> None:
    desk = Desk(config(tmp_path, oauth_dovecot, smtp_server, f"sqlite:///{tmp_path}/m.db", "expired-token"))
    with pytest.raises(SourceError) as e:
        desk.poll()
    message = str(e.value)
    assert f"{oauth_dovecot.host}:{oauth_dovecot.port}" in message and USER in message
    assert "OAuth2 token refused" in message and "expired-token" not in message
    desk.engine.dispose()
