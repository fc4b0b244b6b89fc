"""Every mail's HTML as a browser draws it: headless Chromium, one page per template.

For each template (and language) the HTML part is rendered with the sample
data and opened in Chromium at 800 px. A copy of the page gets a test-only
script (never in the mail) that measures the layout after load and writes the
result into the DOM, which `--dump-dom` hands back: the visible text, the size
of every table, the page's scroll width and every resource the page fetched.
A screenshot of each page is checked to be an 800 px PNG with something on it.

`MAILBOT_UPDATE_SCREENSHOTS=1 pytest tests/test_rendering.py` refreshes
docs/ack.png and docs/digest.png (a digest of a real desk with several tickets).
Under CI (env CI set) a missing Chromium fails instead of skipping.
"""

from __future__ import annotations

import html as html_mod
import json
import mailbox
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from app import DOC_RANGES, forward, sample

from mailbot.app import Desk
from mailbot.config import parse
from mailbot.outgoing.render import SAMPLE_CONTEXT, Renderer

DOCS = Path(__file__).resolve().parents[1] / "docs"
WIDTH, HEIGHT = 800, 1200
REF, IP = SAMPLE_CONTEXT["ref"], SAMPLE_CONTEXT["ip"]
MEASURE = """<pre id="mailbot-measure"></pre><script>
window.addEventListener("load", function () {
  var out = {text: document.body.innerText, scrollWidth: document.documentElement.scrollWidth,
             height: document.documentElement.scrollHeight, tables: [],
             resources: performance.getEntriesByType("resource").map(function (e) { return e.name; })};
  document.querySelectorAll("table").forEach(function (t) {
    var r = t.getBoundingClientRect();
    out.tables.push({id: t.id, left: r.left, right: r.right, width: r.width, height: r.height,
                    bottom: r.bottom});
  });
  var pre = document.getElementById("mailbot-measure");
  pre.textContent = JSON.stringify(out);
});
</script>"""
EXTERNAL = re.compile(r"""<(img|link|script|iframe|object|embed|video|audio|source)\b|url\s*\(|@import"""
                      r"""|\b(src|srcset|background|poster)\s*=""", re.IGNORECASE)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not installed (scripts/install-test-deps installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Browser:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.runs = binary, workdir, 0

    def _run(self, page: Path, *action: str, height: int = HEIGHT) -> subprocess.CompletedProcess[str]:
        self.runs += 1
        profile = self.workdir / f"profile-{self.runs}"  # a fresh profile every time: no state between pages
        cmd = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
               f"--window-size={WIDTH},{height}", *action, page.as_uri()]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    def measure(self, name: str, html: str) -> dict[str, Any]:
        """Load `html` with the measuring script and return what it saw."""
        assert "</body>" in html, name
        page = self.workdir / f"{name}.measure.html"
        page.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        dom = self._run(page, "--dump-dom").stdout
        found = re.search(r'<pre id="mailbot-measure">(.*?)</pre>', dom, re.DOTALL)
        assert found and found.group(1), f"{name}: the page did not finish loading:\n{dom[-500:]}"
        result: dict[str, Any] = json.loads(html_mod.unescape(found.group(1)))
        return result

    def screenshot(self, name: str, html: str, height: int = HEIGHT) -> Path:
        """A PNG of the mail exactly as sent (no script in it)."""
        page = self.workdir / f"{name}.html"
        page.write_text(html, encoding="utf-8")
        png = self.workdir / f"{name}.png"
        self._run(page, f"--screenshot={png}", height=height)
        return png


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    yield Browser(chromium, tmp_path_factory.mktemp("chromium"))


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the image data): a blank page has a handful."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def assert_reads_well(name: str, html: str, seen: dict[str, Any], width: int = WIDTH) -> None:
    # nothing fetched from anywhere: no images, fonts, styles or scripts from outside the mail
    assert seen["resources"] == [], f"{name} loads {seen['resources']}"
    assert not EXTERNAL.search(html), f"{name}: {EXTERNAL.search(html)}"
    # no broken layout: every table drawn, the card and its tables inside the window, no sideways scrolling
    assert seen["tables"], name
    for t in seen["tables"]:
        assert t["width"] > 0 and t["height"] > 0, (name, t)
        assert t["left"] >= 0 and t["right"] <= width, (name, t)
    assert seen["scrollWidth"] <= width, (name, seen["scrollWidth"])
    card = max(seen["tables"][1:] or seen["tables"], key=lambda t: t["width"])
    assert 300 < card["width"] <= width, (name, card)


def template_cases() -> list[tuple[str, str]]:
    cases = [(name, "en") for name in Renderer().names()]
    de = Renderer(language="de")
    cases += [(name, "de") for name in de.names() if de.language_used(name) == "de"]
    return cases


@pytest.mark.parametrize(("name", "language"), template_cases())
def test_every_template_reads_well_in_a_browser(browser: Browser, name: str, language: str) -> None:
    subject, text, html = Renderer(language=language).render(name, SAMPLE_CONTEXT)
    seen = browser.measure(f"{name}-{language}", html)
    shown = " ".join(seen["text"].split())
    assert SAMPLE_CONTEXT["desk_name"] in shown, name
    # what the text part tells, the HTML part shows too: the ticket reference and the IP above all
    for fact in (REF, IP):
        if fact in subject or fact in text:
            assert fact in shown, (name, fact)
    if name in ("ack", "redirect", "needs_info", "delisted", "declined", "digest", "sla_notice"):
        assert REF in shown and IP in shown, name
    if name in ("ack", "redirect", "needs_info", "delisted", "declined"):
        # the reference and what happens next come first, before any table of facts
        assert shown.index(REF) < 200, (name, shown[:200])
    assert_reads_well(name, html, seen)

    png = browser.screenshot(f"{name}-{language}", html)
    width, height, distinct = png_facts(png)
    assert (width, height) == (WIDTH, HEIGHT) and distinct > 20, (name, distinct)


PHONE = 360
PHONE_FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="mail" style="width:{width}px;height:1200px;border:0" srcdoc="{srcdoc}"></iframe>
<pre id="mailbot-measure"></pre><script>
window.addEventListener("load", function () {{
  var d = document.getElementById("mail").contentDocument;
  document.getElementById("mailbot-measure").textContent = JSON.stringify(
    {{text: d.body.innerText, scrollWidth: d.documentElement.scrollWidth}});
}});
</script></body></html>"""


@pytest.mark.parametrize("name", ["ack", "redirect", "needs_info", "delisted", "declined"])
def test_sender_mails_fit_a_phone_screen(browser: Browser, name: str) -> None:
    # headless Chromium will not make a window narrower than 500 px: the mail goes into a 360 px frame
    _subject, _text, html = Renderer().render(name, SAMPLE_CONTEXT)
    page = browser.workdir / f"{name}.phone.html"
    page.write_text(PHONE_FRAME.format(width=PHONE, srcdoc=html_mod.escape(html, quote=True)), encoding="utf-8")
    dom = browser._run(page, "--dump-dom").stdout
    found = re.search(r'<pre id="mailbot-measure">(.*?)</pre>', dom, re.DOTALL)
    assert found and found.group(1), dom[-500:]
    seen = json.loads(html_mod.unescape(found.group(1)))
    assert REF in seen["text"] and IP in seen["text"], name
    assert seen["scrollWidth"] <= PHONE, (name, seen["scrollWidth"])


def test_the_measuring_would_see_an_external_image(browser: Browser) -> None:
    """The check above is only worth something if it notices a remote resource."""
    _s, _t, html = Renderer().render("ack", SAMPLE_CONTEXT)
    bad = html.replace("</body>", '<img src="http://tracker.example/pixel.gif" width="1" height="1"></body>')
    seen = browser.measure("ack-with-pixel", bad)
    assert seen["resources"] == ["http://tracker.example/pixel.gif"]
    with pytest.raises(AssertionError):
        assert_reads_well("ack-with-pixel", bad, seen)


def page_height(seen: dict[str, Any]) -> int:
    return min(int(max(t["bottom"] for t in seen["tables"])) + 16, 4000)


def real_desk_digest(tmp_path: Path) -> tuple[str, str]:
    """The digest of a desk that has worked for two days: tickets in every state, one due soon."""
    config = parse({
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "maildir", "maildir_path": "outbox", "from_address": "delist@example.org"},
        "desk": {"name": "Example Delist Desk", "timezone": "Europe/Berlin", "staff": ["support@example.org"]},
        "policy": {"allow_ranges": DOC_RANGES},
    }, base_dir=str(tmp_path), environ={})
    inbox = mailbox.Maildir(str(tmp_path / "inbox"), create=True)
    desk = Desk(config)
    arrivals: list[tuple[float, bytes]] = [
        (0, sample("01-banned-sender-attached.eml")),
        (3, sample("02-portal-outlook-inline.eml")),
        (9, forward("198.51.100.77", "fwd-a", "ops@fabrikam.example")),
        (14, sample("04-no-code.eml")),
        (20, forward("192.0.2.15", "fwd-b", "postmaster@litware.example")),
        (26, sample("06-ipv6-thunderbird.eml")),
        (31, forward("203.0.113.200", "fwd-c", "it@proseware.example")),
        (38, forward("198.51.100.9", "fwd-d", "admin@relecloud.example")),
    ]
    start = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        for at, raw in arrivals:
            clock.move_to(start + timedelta(hours=at))
            inbox.add(raw)
            desk.run_once()
        clock.move_to(start + timedelta(hours=43))
        desk.sweep()
        _subject, _text, html = desk.render_digest()
    desk.engine.dispose()
    return html, "DL-000001"


def test_a_real_digest_with_several_tickets_reads_well(browser: Browser, tmp_path: Path) -> None:
    html, oldest = real_desk_digest(tmp_path)
    seen = browser.measure("digest-real", html)
    shown = " ".join(seen["text"].split())
    assert oldest in shown and "203.0.113.45" in shown and "2001:db8:5::25" in shown
    assert "Due soon (1)" in shown
    open_table = next(t for t in seen["tables"] if t["id"] == "open-tickets")
    assert 300 < open_table["width"] <= WIDTH
    assert_reads_well("digest-real", html, seen)

    # the whole page, cut below the mail
    digest_png = browser.screenshot("digest", html, height=page_height(seen))
    _s, _t, ack_html = Renderer().render("ack", SAMPLE_CONTEXT)
    ack_png = browser.screenshot("ack", ack_html, height=page_height(browser.measure("ack", ack_html)))
    for png in (digest_png, ack_png):
        width, _height, distinct = png_facts(png)
        assert width == WIDTH and distinct > 20
    if os.environ.get("MAILBOT_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(digest_png, DOCS / "digest.png")
        shutil.copyfile(ack_png, DOCS / "ack.png")
