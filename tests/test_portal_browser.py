"""The portal as a person uses it (issue #19): headless Chromium from Debian's packages, driven by
Playwright pointed at /usr/bin/chromium (nothing downloads a browser), against `mailbot portal`
on loopback, the real SMTP test server and each database.

Fill the form, read the confirmation mail at the SMTP server, open its link, press the button:
the IP is gone from the table source and the ticket carries the portal's events.
Every page is photographed at desktop and phone width and checked for its text;
`MAILBOT_UPDATE_SCREENSHOTS=1` copies the pictures to docs/portal-*.png. Under CI a missing
Chromium fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from app import mailbot_cli
from portal_app import LINK, PortalWorld
from test_rendering import png_facts

from mailbot.store.states import EventKind, TicketState

DOCS = Path(__file__).resolve().parents[1] / "docs"
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
IP = "203.0.113.45"


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not installed (scripts/install-test-deps installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def chromium(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


class Photographer:
    """Each page at both widths: its text checked, a PNG with something on it, no sideways scroll."""

    def __init__(self, browser: Any, workdir: Path) -> None:
        self.browser, self.workdir, self.taken = browser, workdir, []  # type: list[Path]

    def page_at(self, url: str, size: str, cookies: list[Any]) -> Any:
        w, h = SIZES[size]
        context = self.browser.new_context(viewport={"width": w, "height": h}, java_script_enabled=False,
                                           is_mobile=size == "phone", device_scale_factor=1)
        context.add_cookies(cookies)
        page = context.new_page()
        page.goto(url)
        return page

    def shoot(self, page: Any, name: str, size: str, expected: list[str]) -> None:
        text = " ".join(page.inner_text("body").split())
        for words in expected:
            assert words in text, (name, size, words, text[:400])
        width = SIZES[size][0]
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, size)
        png = self.workdir / f"portal-{name}-{size}.png"
        page.screenshot(path=str(png), full_page=True)
        got_width, _height, distinct = png_facts(png)
        assert got_width == width and distinct > 20, (name, size, distinct)
        self.taken.append(png)

    def both(self, url: str, name: str, expected: list[str], cookies: list[Any]) -> None:
        for size in SIZES:
            page = self.page_at(url, size, cookies)
            self.shoot(page, name, size, expected)
            page.context.close()


def confirmation_link(smtp: Any, n: int) -> str:
    mail = smtp.wait_for(n, timeout=20)[n - 1].message
    body = mail.get_body(("plain",))
    assert body is not None
    m = LINK.search(body.get_content())
    assert m, body.get_content()
    return m.group(1)


def test_a_sender_delists_their_ip_in_a_real_browser(
        chromium: Any, make_portal: Callable[..., PortalWorld], mailbot_portal: Callable[..., tuple[str, Path]],
        smtp_server: Any, tmp_path: Path, database_url: str) -> None:
    world = make_portal()
    world.list_ip(f"{IP}/32", "5.7.606")
    base, config_path = mailbot_portal()
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()

    # the form: the address that got the rejection and the IP named in it
    page.goto(base + "/")
    assert "Delist an IP address" in page.inner_text("h1")
    page.fill("#address", "dana.ops@mailops.example")
    page.fill("#ip", IP)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == base + "/sent?lang=en", page.inner_text("body")
    assert "Check your mail" in page.inner_text("h1")

    # the confirmation mail, at the SMTP server: to that address, from the desk, with the link
    mail = smtp_server.wait_for(1, timeout=20)[0]
    assert mail.rcpt_tos == ["dana.ops@mailops.example"]
    assert mail.message["Subject"] == f"Confirm: delist {IP}"
    link = confirmation_link(smtp_server, 1)
    assert link.startswith(base + "/confirm/")

    # opening the link changes nothing; the button does
    page.goto(link)
    assert page.inner_text("h1") == "Delist this IP address?" and IP in page.inner_text(".ip")
    assert world.listed(IP)
    page.click("text=Delist IP")
    assert f"{IP} is delisted" in page.inner_text("h1")
    ref = re.search(r"DL-\d{6}", page.inner_text("main"))
    assert ref is not None

    # gone from the listing source, and on the ticket: the request and the delist, by the portal
    assert not world.listed(IP)
    [ticket] = world.tickets()
    assert (ticket.ref, ticket.ip, ticket.state) == (ref.group(0), IP, TicketState.CLOSED)
    events = {e.kind: e for e in world.events(ticket.id or 0)}
    assert events[EventKind.PORTAL_REQUEST].actor == "portal"
    assert "dana.ops@mailops.example" in (events[EventKind.PORTAL_REQUEST].detail or "")
    assert "client 127.0.0.1" in (events[EventKind.PORTAL_REQUEST].detail or "")
    assert events[EventKind.PORTAL_DELIST].detail.startswith("delisted: ")  # type: ignore[union-attr]
    shown = mailbot_cli("-c", str(config_path), "show", ticket.ref)
    assert shown.returncode == 0, shown.stderr
    assert "portal_delist" in shown.stdout and "portal" in shown.stdout

    # and the sender has a mail of it
    result = smtp_server.wait_for(2, timeout=20)[1].message
    assert result["Subject"] == f"[{ticket.ref}] {IP} has been removed from the block list"

    # pressing again (a reload, a second tab) delists nothing more and says what the link did
    page.goto(link)
    assert "has been used already" in page.inner_text("main") and f"{IP} is delisted" in page.inner_text("h1")
    context.close()

    if "sqlite" in database_url:
        photograph(chromium, base, world, smtp_server, tmp_path, link)


def photograph(chromium: Any, base: str, world: PortalWorld, smtp: Any, tmp_path: Path, used_link: str) -> None:
    """Every page at desktop and phone width; a second listed IP gives a fresh link for the confirm page."""
    world.list_ip("203.0.113.46/32", "5.7.606")
    shots = Photographer(chromium, tmp_path)
    shots.both(base + "/", "form", ["Delist an IP address", "5.7.606 to 5.7.649", "Send me the link"], [])
    shots.both(base + "/?lang=de", "form-de", ["IP-Adresse von der Sperrliste entfernen", "Link zuschicken"], [])
    shots.both(base + "/sent", "sent", ["Check your mail", "Delist IP"], [])
    # a browser that asks for an IP the portal cannot delist
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    page.goto(base + "/")
    page.fill("#address", "erik@contoso.example")
    page.fill("#ip", "198.51.100.99")
    page.click("button[type=submit]")
    assert "cannot be delisted here" in page.inner_text("h1")
    context.close()
    for size in SIZES:
        page = shots.page_at(base + "/", size, [])
        page.fill("#address", "erik@contoso.example")
        page.fill("#ip", "198.51.100.99")
        page.click("button[type=submit]")
        shots.shoot(page, "refused", size, ["This IP cannot be delisted here", "delist@example.org"])
        page.context.close()
    # the confirmation page and the result, with a fresh link
    page = shots.page_at(base + "/", "desktop", [])
    page.fill("#address", "erik@contoso.example")
    page.fill("#ip", "203.0.113.46")
    page.click("button[type=submit]")
    page.context.close()
    link = confirmation_link(smtp, 3)
    shots.both(link, "confirm", ["Delist this IP address?", "203.0.113.46", "Delist IP"], [])
    shots.both(used_link, "result", [f"{IP} is delisted", "has been used already"], [])
    if os.environ.get("MAILBOT_UPDATE_SCREENSHOTS"):
        for png in shots.taken:
            shutil.copyfile(png, DOCS / png.name)
