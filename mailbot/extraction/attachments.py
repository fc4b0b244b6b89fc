"""Attachments that hold a forwarded NDR: .eml, Outlook .msg, TNEF winmail.dat.

Contract: `open_attachment(part, payload, budget)` returns what could be read
from one non-text MIME part as (kind, bytes) pairs: ("message", raw mail) for
an .eml (including one sent as application/octet-stream), or
("<name> body", UTF-8 text) for the body of a .msg or winmail.dat. Third-party
parsers run in a worker thread with a time limit and only on attachments
under a size cap; every failure becomes a note on the budget, never an
exception. Only this module imports extract_msg and tnefparse.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Callable
from email.message import Message
from typing import Any

from mailbot.extraction.limits import ATTACHMENT_SECONDS, MAX_ATTACHMENT_BYTES, Budget
from mailbot.extraction.text import html_to_text

Payload = Callable[[Message, Budget], bytes]

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_TNEF_MAGIC = b"\x78\x9f\x3e\x22"
_MAIL_START = re.compile(
    rb"^(?:Return-Path|Received|From|Date|Message-ID|MIME-Version|Subject|To|X-[\w-]+|Delivered-To)"
    rb":",
    re.I,
)


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:  # bad RFC 2231 parameters
        name = ""
    return str(name).lower()


def open_attachment(part: Message, payload: Payload, budget: Budget) -> list[tuple[str, bytes]]:
    ctype = part.get_content_type()
    name = _filename(part)
    is_msg = name.endswith(".msg") or ctype in ("application/vnd.ms-outlook", "application/x-msg")
    is_tnef = name == "winmail.dat" or ctype in ("application/ms-tnef", "application/vnd.ms-tnef")
    is_eml = name.endswith(".eml") or ctype in ("application/octet-stream", "message/x-eml")
    if not (is_msg or is_tnef or is_eml):
        return []
    data = payload(part, budget)
    if not data:
        return []
    if is_msg or data.startswith(_OLE_MAGIC):
        return _guarded(f"{name or 'attachment.msg'}", data, _read_msg, budget)
    if is_tnef or data.startswith(_TNEF_MAGIC):
        return _guarded(f"{name or 'winmail.dat'}", data, _read_tnef, budget)
    if _MAIL_START.match(data.lstrip()[:200]):
        return [("message", data)]
    return []


def _guarded(name: str, data: bytes, reader: Callable[[bytes], str], budget: Budget) -> list[tuple[str, bytes]]:
    if len(data) > MAX_ATTACHMENT_BYTES:
        budget.note(f"{name}: larger than {MAX_ATTACHMENT_BYTES} bytes, not opened")
        return []
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                box["text"] = reader(data)
        except BaseException as exc:  # third-party parsers raise anything on junk
            box["error"] = exc

    # A thread cannot be killed, but a parser stuck in a loop no longer holds
    # up the mail; the daemon flag lets the process exit regardless.
    worker = threading.Thread(target=run, name="mailbot-attachment", daemon=True)
    worker.start()
    worker.join(min(ATTACHMENT_SECONDS, max(budget.remaining(), 0.05)))
    if worker.is_alive():
        budget.note(f"{name}: parser timed out")
        return []
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, MemoryError):
            raise exc  # as in the calling thread: the process's owner decides
        budget.note(f"{name}: unreadable ({type(exc).__name__}: {str(exc)[:80]})")
        return []
    text = str(box.get("text") or "")
    if not text.strip():
        budget.note(f"{name}: no readable body")
        return []
    return [(f"{name} body", text.encode("utf-8", "replace"))]


def _read_msg(data: bytes) -> str:
    if not data.startswith(_OLE_MAGIC):
        raise ValueError("not an OLE compound file")
    import extract_msg

    logging.getLogger("extract_msg").setLevel(logging.CRITICAL)
    msg = extract_msg.openMsg(data)
    try:
        body = getattr(msg, "body", None)
        if body:
            return str(body)
        html = getattr(msg, "htmlBody", None)
        if isinstance(html, bytes):
            return html_to_text(html.decode("utf-8", "replace"))
        return ""
    finally:
        msg.close()


def _read_tnef(data: bytes) -> str:
    if not data.startswith(_TNEF_MAGIC):
        raise ValueError("not a TNEF stream")
    import tnefparse

    logging.getLogger("tnefparse").setLevel(logging.CRITICAL)
    tnef = tnefparse.TNEF(data, do_checksum=False)
    body = getattr(tnef, "body", None)
    if body:
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    html = getattr(tnef, "htmlbody", None)
    if html:
        raw = html.decode("utf-8", "replace") if isinstance(html, bytes) else str(html)
        return html_to_text(raw)
    return ""
