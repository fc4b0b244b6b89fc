"""Templates per language, operator overrides, and `mailbot templates list|preview`."""

from __future__ import annotations

import email
import email.policy
import subprocess
from pathlib import Path

import pytest
from app import mailbot_cli

from mailbot.config import ConfigError, parse
from mailbot.demo import DEMO_CONFIG
from mailbot.render import SAMPLE_CONTEXT, Renderer

SENDER_FACING = ("ack", "redirect", "needs_info", "delisted", "declined")
STAFF_FACING = ("digest", "sla_notice")


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
        assert "How to answer" in text or "digest" in text, name
    # the default stays English
    assert Renderer().render("ack", SAMPLE_CONTEXT)[0] == "[DL-000123] Delisting request received for 203.0.113.45"


def test_the_german_request_for_the_ndr_names_what_was_missing_in_german() -> None:
    context = {**SAMPLE_CONTEXT, "ip": "", "missing": ["the IP address named in the rejection line",
                                                       "a rejection we handle here (the notice says 550 5.7.1)"]}
    _subject, text, html = Renderer(language="de").render("needs_info", context)
    assert "  - die IP-Adresse aus der Ablehnungszeile\n" in text
    assert "  - eine Ablehnung, die wir hier bearbeiten (in der Meldung steht 550 5.7.1)\n" in text
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
    assert body is not None and "Ihr Delisting-Antrag hat die Nummer DL-000001." in body.get_content()
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
    assert "Your delisting request is DL-000123." in r.stdout
    assert "Your delisting request is DL-000123." in (tmp_path / "ack.html").read_text()
    assert "no config file" in r.stderr  # shipped templates, said so

    de = mailbot("templates", "preview", "needs_info", "--language", "de", cwd=tmp_path)
    assert de.returncode == 0 and "Wir brauchen die vollständige Unzustellbarkeitsmeldung" in de.stdout

    unknown = mailbot("templates", "preview", "ackk", cwd=tmp_path)
    assert unknown.returncode == 1 and "no template 'ackk'; there are: ack, database_alert, declined" in unknown.stderr
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
