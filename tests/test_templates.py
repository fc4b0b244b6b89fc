"""Templates per language, operator overrides, and `mailbot templates list|preview`."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
from pathlib import Path

import pytest
from app import mailbot_cli

from mailbot.cli.demo import DEMO_CONFIG
from mailbot.config import ConfigError, parse
from mailbot.outgoing.render import SAMPLE_CONTEXT, Renderer

SENDER_FACING = ("ack", "redirect", "needs_info", "delisted", "conditional", "declined", "not_listed", "closed")
STAFF_FACING = ("digest", "sla_notice", "staff_confirmation")


def mailbot(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return mailbot_cli(*args, cwd=cwd)


def config_file(directory: Path, templates: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mailbot.toml"
    path.write_text(DEMO_CONFIG + "\n[templates]\n" + templates, encoding="utf-8")
    return path


def test_german_senders_get_german_mails_and_staff_mails_stay_english() -> None:
    de = Renderer(language="de")
    for name in SENDER_FACING:
        subject, text, html = de.render(name, SAMPLE_CONTEXT)
        assert subject.startswith("[DL-000123] ") and "DL-000123" in text, name
        assert '<html lang="de">' in html and "Betreff" in html, name
        assert "Betreff" in text and "keep [" not in text, name
    assert de.render("ack", SAMPLE_CONTEXT)[0] == "[DL-000123] Delisting-Antrag für 203.0.113.45 erhalten"
    for name in STAFF_FACING:
        subject, text, _html = de.render(name, SAMPLE_CONTEXT)
        assert "How to answer" in text or "digest" in text or "this is what each did" in text, name
    # the default stays English
    assert Renderer().render("ack", SAMPLE_CONTEXT)[0] == "[DL-000123] Delisting request received for 203.0.113.45"


def test_the_german_request_for_the_ndr_names_what_was_missing_in_german() -> None:
    context = {**SAMPLE_CONTEXT, "ip": "", "missing": ["the IP address named in the rejection line",
                                                       "a rejection we handle here (the notice says 550 5.7.1)"]}
    _subject, text, html = Renderer(language="de").render("needs_info", context)
    assert "  - die IP-Adresse aus der Ablehnungszeile\n" in text
    assert "  - eine Ablehnung, die wir hier bearbeiten (in der Meldung steht\n    550 5.7.1)\n" in text
    assert "IP-Adresse:       nicht gefunden" in text
    assert "<li>die IP-Adresse aus der Ablehnungszeile</li>" in html


def test_an_override_folder_replaces_only_the_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "de").mkdir()
    (tmp_path / "ack.txt.j2").write_text(
        "{% block subject %}[{{ ref }}] We got it{% endblock %}\n{% block body %}Ours: {{ ip }}{% endblock %}\n")
    (tmp_path / "de" / "redirect.txt.j2").write_text(
        "{% block subject %}[{{ ref }}] Portal{% endblock %}\n{% block body %}Unser Text{% endblock %}\n")

    en = Renderer(tmp_path)
    subject, text, html = en.render("ack", SAMPLE_CONTEXT)
    assert (subject, text) == ("[DL-000123] We got it", "Ours: 203.0.113.45\n")
    assert "Your delisting request is DL-000123" in html  # no ack.html.j2 in the folder: the shipped one
    assert en.render("redirect", SAMPLE_CONTEXT)[0].endswith("Delist 203.0.113.45 yourself on the self-service portal")
    assert en.overridden("ack") and not en.overridden("redirect")

    de = Renderer(tmp_path, "de")
    assert de.render("redirect", SAMPLE_CONTEXT)[1] == "Unser Text\n"  # override/de before override/
    assert de.render("ack", SAMPLE_CONTEXT)[0] == "[DL-000123] We got it"  # override/ before shipped de/
    assert de.render("delisted", SAMPLE_CONTEXT)[0] == "[DL-000123] 203.0.113.45 wurde von der Sperrliste entfernt"
    assert de.languages("redirect") == ["en", "de"] and de.languages("digest") == ["en"]
    assert "de/ack" not in de.names() and "ack" in de.names()


def test_a_language_that_is_not_a_tag_is_a_config_error_naming_the_key() -> None:
    base = {"mailbox": {"host": "imap.example.org", "user": "u"}, "outgoing": {"host": "smtp.example.org"}}
    assert parse({**base, "templates": {"language": "de"}}, environ={}).templates.language == "de"
    with pytest.raises(ConfigError, match=r"templates\.language: must be a language tag"):
        parse({**base, "templates": {"language": "../etc"}}, environ={})


def test_a_desk_configured_for_german_acknowledges_in_german(tmp_path: Path) -> None:
    config_file(tmp_path / "demo", 'language = "de"\n')
    r = mailbot("demo", "--dir", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    subjects = {}
    for f in (tmp_path / "demo" / "outbox" / "new").iterdir():
        msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        subjects[str(msg["Subject"])] = msg
    ack = subjects["[DL-000001] Delisting-Antrag für 203.0.113.45 erhalten"]
    body = ack.get_body(("plain",))
    assert body is not None and "Ihre Antragsnummer: DL-000001." in body.get_content()
    html = ack.get_body(("html",))
    assert html is not None and '<html lang="de">' in html.get_content()


def test_templates_list_shows_languages_the_one_used_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "ack.txt.j2").write_text("{% block subject %}x{% endblock %}{% block body %}y{% endblock %}")
    config = config_file(tmp_path, 'dir = "tpl"\nlanguage = "de"\n')
    r = mailbot("-c", str(config), "templates", "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert set(rows) >= {*SENDER_FACING, *STAFF_FACING}
    assert rows["ack"].split()[:5] == ["ack", "en,", "de", "en", "yes"]
    assert rows["redirect"].split()[:5] == ["redirect", "en,", "de", "de", "no"]
    assert rows["digest"].split()[:4] == ["digest", "en", "en", "no"]


def test_templates_preview_prints_subject_and_text_and_writes_the_html(tmp_path: Path) -> None:
    r = mailbot("templates", "preview", "ack", "--html", str(tmp_path / "ack.html"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Subject: [DL-000123] Delisting request received for 203.0.113.45\n\n")
    assert "Your request is DL-000123. We will answer by" in r.stdout
    assert "Your delisting request is DL-000123." in (tmp_path / "ack.html").read_text()
    assert "no config file" in r.stderr  # shipped templates, said so

    de = mailbot("templates", "preview", "needs_info", "--language", "de", cwd=tmp_path)
    assert de.returncode == 0 and "Wir brauchen die vollständige Unzustellbarkeitsmeldung" in de.stdout

    unknown = mailbot("templates", "preview", "ackk", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no template 'ackk'; there are: ack, closed, conditional, database_alert, declined" in unknown.stderr
    bad = mailbot("templates", "preview", "ack", "--language", "../x", cwd=tmp_path)
    assert bad.returncode == 2 and "--language" in bad.stderr


def test_a_broken_override_is_reported_by_preview(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "ack.txt.j2").write_text(
        "{% block subject %}{{ nonsuch }}{% endblock %}{% block body %}{% endblock %}")
    config = config_file(tmp_path, 'dir = "tpl"\n')
    r = mailbot("-c", str(config), "templates", "preview", "ack")
    assert r.returncode == 1 and "template ack:" in r.stderr and "nonsuch" in r.stderr


def test_the_templates_commands_have_help_with_an_example() -> None:
    for cmd in (["templates"], ["templates", "list"], ["templates", "preview"]):
        r = mailbot(*cmd, "--help")
        assert r.returncode == 0 and "Example" in r.stdout, cmd


# ----------------------------------------------------------------------------- the text part's lines

MAX_COLUMNS = 78
FILL_WIDTH = 72
_LONG_TICKET = {**SAMPLE_CONTEXT["open"][0], "ref": "DL-001234", "ip": "2001:db8:1234:5678:9abc:def0:1234:5678",
                "sender": "erik.administrator@mail.contoso-sender.example", "time_left": "1d 23h 59m left",
                "due_local": "2026-12-02 14:00 CEST", "reason": "the IP address named in the rejection line",
                "subject": "FW: Undeliverable: Quarterly results for the board of directors and the audit committee",
                "original": "Hello, our mail to all of your customers has been rejected since this morning and our "
                            "sales team cannot reach anyone at all; please help us quickly, it is urgent.\nErik"}
LONG_CONTEXT = {
    **SAMPLE_CONTEXT, **{k: _LONG_TICKET[k] for k in ("ref", "ip", "sender", "due_local", "original")},
    "due_utc": "2026-12-02 12:00 UTC",
    "desk_name": "Contoso Mail Delisting Desk of the Postmaster Team", "joined": True,
    "note": "Your server sends to purchased lists: we counted 4,000 complaints in the last week and cannot lift the "
            "block before they stop.",
    "missing": ["the IP address named in the rejection line",
                "the full rejection code (for example 550 5.7.511) and the text of the rejection line"],
    "portal_url": "https://sender.office.com/delist/request?ip=2001:db8:1234:5678:9abc:def0:1234:5678&lang=en",
    "mailbox": "delist@contoso-sender.example@imap.contoso-sender.example:993/INBOX",
    "error": "IMAP server imap.contoso-sender.example:993 (user delist-requests@mail.contoso-sender.example): "
             "login refused",
    **{k: [_LONG_TICKET] for k in ("open", "escalated", "breached", "new", "answered", "redirected", "needs_info",
                                   "escalations", "breaches")},
    "repeat_ips": [{"ip": _LONG_TICKET["ip"], "count": 3}], "repeat_senders": [{"sender": _LONG_TICKET["sender"],
                                                                                  "count": 3}],
    "quarantined": [{"id": 12, "sender": _LONG_TICKET["sender"], "fetched_local": "2026-12-02 14:00 CEST",
                     "outcome": "failed three times: the parser ran out of time on a 40 MB attachment"}],
}
_FIRST_UNIT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+|[245]\d\d [245]\.\d+\.\d+|\S+")
"""What a line starts with that the line before could have taken (a time or a code stays whole)."""


def layout_problems(text: str, exempt: tuple[str, ...] = ()) -> list[str]:
    """Lines over MAX_COLUMNS (but a quoted rejection line or a URL) and paragraphs broken early."""
    problems = []
    lines = text.split("\n")
    in_item = False  # a "  - " list item and the lines that carry it on
    for i, line in enumerate(lines):
        if len(line) > MAX_COLUMNS and not any(e and e in line for e in exempt) and "://" not in line:
            problems.append(f"{len(line)} columns: {line}")
        in_item = bool(re.match(r" +- ", line) or (in_item and re.match(r" {4}\S", line)))
        if i + 1 == len(lines) or not line.strip():
            continue
        nxt = lines[i + 1]
        prose = not line[0].isspace() and nxt[:1].strip()
        continued = in_item and re.match(r" {4}\S", nxt)
        if prose or continued:
            unit = _FIRST_UNIT.match(nxt.strip())
            if unit and len(line) + 1 + len(unit.group(0)) <= FILL_WIDTH:
                problems.append(f"broken early ({len(line)} columns, then {unit.group(0)!r}): {line}")
    return problems


def test_the_layout_check_sees_the_ragged_acknowledgement_of_before() -> None:
    before = ("Your delisting request is DL-000001. It joins the request already open for this IP address.\n"
              "We will answer by 2026-11-30 10:00 CET.\n")
    assert len(layout_problems(before)) == 1
    assert layout_problems("We reviewed your request for the address and\ncannot remove it yet.\n")
    assert not layout_problems("  Rejection line:  " + "x " * 60 + "\n", exempt=("x " * 60,))


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("context", [SAMPLE_CONTEXT, LONG_CONTEXT], ids=["sample", "long"])
def test_every_text_mail_is_filled_evenly_within_78_columns(language: str, context: dict[str, object]) -> None:
    r = Renderer(language=language)
    rendered = 0
    for name in r.names():
        if r.language_used(name) != language:
            continue  # the English one, checked with language en
        _subject, text, _html = r.render(name, context)
        quoted = (str(context["rejection_text"]), str(context["text"]))
        assert layout_problems(text, exempt=quoted) == [], f"{language} {name}:\n{text}"
        rendered += 1
    assert rendered == (19 if language == "en" else 12)  # with the portal's portal_confirm and portal_result
