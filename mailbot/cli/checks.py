"""`mailbot check`: one line per check, so an operator sees what is wrong at once.

A line is `ok`, `FAIL` (the command exits 1) or `warn`: something that works
but is probably not what the operator meant (nobody to alert, a template
language that does not exist, staff mail that can never count as an answer);
warnings alone leave the exit status 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mailbot.config import Config, ConfigError, database_url, load

Level = Literal["ok", "warn", "FAIL"]
Echo = Callable[[str], None]

FULL_CHECK_MAX_BYTES = 256 * 1024 * 1024
"""SQLite files up to this size get `PRAGMA integrity_check`; larger ones `quick_check`
(which skips the index-to-table cross-checks, linear instead of much slower)."""


def _line(echo: Echo, level: Level, name: str, detail: str) -> bool:
    echo(f"{level:<4}  {name:<10} {detail}")
    return level != "FAIL"


def run_checks(config_path: str, echo: Echo) -> bool:
    try:
        config = load(config_path)
    except ConfigError as e:
        _line(echo, "FAIL", "config", str(e))
        return False
    _line(echo, "ok", "config", config_path)
    results = [check_database(config, echo), check_mailbox(config, echo), check_outgoing(config, echo),
               check_templates(config, echo), check_desk(config, echo), check_portal(config, echo)]
    return all(results)


def check_database(config: Config, echo: Echo) -> bool:
    """Connect, run the integrity check (SQLite) and read every table mailbot has made."""
    from mailbot.store import schema
    from mailbot.store.engine import fault_line, is_fault, make_engine, where

    url = database_url(config)
    place = where(url)
    try:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                damage, how = _integrity(conn, url)
                if damage:
                    return _line(echo, "FAIL", "database", f"database {place} is damaged ({how}: {damage}): "
                                                           "stop mailbot, and restore it from a backup")
                read = _read_tables(conn)
            current, head = schema.current(engine), schema.head()
        finally:
            engine.dispose()
    except Exception as e:
        if is_fault(e):
            return _line(echo, "FAIL", "database", fault_line(url, e))
        return _line(echo, "FAIL", "database", f"database {place}: {e.__class__.__name__}: {' '.join(str(e).split())}"
                     [:400])
    done = f"{how} ok, {read} tables read" if how else f"{read} tables read"
    # a check only looks: an empty or older schema is what `mailbot db upgrade` (or the daemon) is for
    if current == head:
        return _line(echo, "ok", "database", f"{place}: {done}, schema {current} (newest)")
    return _line(echo, "ok", "database", f"{place}: {done}, schema {current or 'empty'}; "
                                         f"{head} is newer: the daemon or `mailbot db upgrade` will bring it up")


def _integrity(conn: Any, url: str) -> tuple[str, str]:
    """(what is damaged, or "", the check that ran); PostgreSQL has none to run from here."""
    if conn.dialect.name != "sqlite":
        return "", ""
    from sqlalchemy.engine import make_url

    from mailbot.store.engine import is_damaged

    name = make_url(url).database or ""
    size = Path(name).stat().st_size if name and name != ":memory:" and Path(name).exists() else 0
    pragma = "integrity_check" if size <= FULL_CHECK_MAX_BYTES else "quick_check"
    try:
        rows = [str(r[0]) for r in conn.exec_driver_sql(f"PRAGMA {pragma}(5)").fetchall()]
    except Exception as e:
        if not is_damaged(e):
            raise
        rows = [" ".join(str(getattr(e, "orig", e)).split())]  # too damaged for the check to walk it
    return ("" if rows == ["ok"] else "; ".join(rows)[:300]), pragma


def _read_tables(conn: Any) -> int:
    """Read a row of every mailbot table there is: a damaged page or a missing grant shows here."""
    from sqlalchemy import inspect, text
    from sqlmodel import SQLModel

    present = set(inspect(conn).get_table_names())
    tables = [t for t in SQLModel.metadata.sorted_tables if t.name in present]
    for t in tables:
        conn.execute(text(f'SELECT 1 FROM "{t.name}" LIMIT 1')).all()
    return len(tables)


def check_mailbox(config: Config, echo: Echo) -> bool:
    m = config.mailbox
    if m.source == "maildir":
        p = config.path(m.maildir_path)
        ok = _line(echo, "ok" if p.is_dir() or not p.exists() else "FAIL", "mailbox", f"maildir {p}")
        if m.sent_folders:
            _line(echo, "warn", "folders", "mailbox.sent_folders is only read from IMAP: with source = "
                                           "\"maildir\" no sent folder is read")
        return ok
    from mailbot.source.base import SourceError
    from mailbot.source.imap import probe

    try:
        info = probe(m, (*m.sent_folders, m.processed_folder, m.quarantine_folder))
    except SourceError as e:
        return _line(echo, "FAIL", "mailbox", str(e))
    caps = ", ".join(k.upper() for k in ("move", "idle") if info[k]) or "no MOVE, no IDLE"
    _line(echo, "ok", "mailbox", f"imap {m.user}@{m.host}:{m.port} folder {m.folder}: "
                                 f"{info['messages']} messages; {caps}")
    return check_folders(config, info, echo)


def check_folders(config: Config, info: dict[str, Any], echo: Echo) -> bool:
    """Every configured folder can be selected (the inbox was, by the mailbox check)."""
    m = config.mailbox
    problems: list[str] = []
    seen = [f"inbox {m.folder}"]
    for folder in m.sent_folders:
        problem = info["folders"][folder]
        if problem:
            problems.append(f"sent folder {folder!r} {problem} (mailbot skips it: answers filed there are "
                            "never seen; fix mailbox.sent_folders)")
        else:
            seen.append(f"sent {folder}")
    for role, folder in (("processed", m.processed_folder), ("quarantine", m.quarantine_folder)):
        problem = info["folders"][folder]
        if not info["move"]:
            seen.append(f"{role} {folder} (not used: no MOVE, mail is flagged instead)")
        elif problem == "does not exist":
            seen.append(f"{role} {folder} (created at first use)")
        elif problem:
            problems.append(f"{role} folder {folder!r} {problem} (mail cannot be moved there; "
                            f"fix mailbox.{role}_folder)")
        else:
            seen.append(f"{role} {folder}")
    if problems:
        return _line(echo, "FAIL", "folders", "; ".join(problems))
    return _line(echo, "ok", "folders", ", ".join(seen))


def check_outgoing(config: Config, echo: Echo) -> bool:
    o = config.outgoing
    if o.transport == "maildir":
        return _line(echo, "ok", "outgoing", f"maildir {config.path(o.maildir_path)}")
    from mailbot.outgoing.transports import DeliveryError, SmtpTransport

    try:
        SmtpTransport(o).probe()
    except (DeliveryError, ConfigError) as e:
        return _line(echo, "FAIL", "outgoing", str(e))
    return _line(echo, "ok", "outgoing", f"smtp {o.host}:{o.port} ({o.security})"
                                         + (f" as {o.user}" if o.user else ""))


def check_templates(config: Config, echo: Echo) -> bool:
    from mailbot.outgoing.render import DEFAULT_LANGUAGE, SAMPLE_CONTEXT, Renderer, TemplateError

    t = config.templates
    override = config.path(t.dir) if t.dir else None
    try:
        r = Renderer(override, t.language)
        names = r.names()
        for name in names:
            r.render(name, SAMPLE_CONTEXT)
    except TemplateError as e:
        return _line(echo, "FAIL", "templates", str(e))
    _line(echo, "ok", "templates", ", ".join(names))
    if override is not None and not override.is_dir():
        _line(echo, "warn", "templates", f"templates.dir {override} is not a folder: the shipped templates are used")
    if t.language != DEFAULT_LANGUAGE and not any(t.language in r.languages(name) for name in names):
        _line(echo, "warn", "templates", f"templates.language {t.language!r}: no template exists in that language "
                                         f"(no folder {t.language}/ in templates.dir or the shipped templates); "
                                         f"every mail is sent in {DEFAULT_LANGUAGE!r}")
    return True


def check_desk(config: Config, echo: Echo) -> bool:
    """Settings that work but leave a part of the desk silently off."""
    if not config.desk.staff:
        _line(echo, "warn", "staff", "desk.staff is empty: nobody gets escalations, breach notices, digests "
                                     "or alerts")
    replies = config.replies
    if not replies.authserv_ids and not replies.trust_topmost:
        _line(echo, "warn", "answers", "staff-mail answers are off: without replies.authserv_ids no "
                                       "Authentication-Results are trusted, so mail from staff never counts as "
                                       "an answer (the sent folder and `mailbot answer` still do)")
    return True


def check_portal(config: Config, echo: Echo) -> bool:
    """The self-service portal (issue #19): off, or its URL, key, listing source and pages."""
    from mailbot.portal.checks import portal_checks

    ok = True
    for level, detail in portal_checks(config):
        ok = _line(echo, level, "portal", detail) and ok
    return ok
