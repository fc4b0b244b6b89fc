"""`mailbot check`: one line per check, so an operator sees what is wrong at once."""

from __future__ import annotations

from collections.abc import Callable

from mailbot.config import Config, ConfigError, database_url, load


def _line(echo: Callable[[str], None], ok: bool, name: str, detail: str) -> bool:
    echo(f"{'ok  ' if ok else 'FAIL'}  {name:<10} {detail}")
    return ok


def run_checks(config_path: str, echo: Callable[[str], None]) -> bool:
    try:
        config = load(config_path)
    except ConfigError as e:
        _line(echo, False, "config", str(e))
        return False
    _line(echo, True, "config", config_path)
    results = [check_database(config, echo), check_mailbox(config, echo), check_outgoing(config, echo),
               check_templates(config, echo)]
    return all(results)


def check_database(config: Config, echo: Callable[[str], None]) -> bool:
    from sqlalchemy import text

    from mailbot import schema
    from mailbot.db import make_engine, safe_url

    where = safe_url(config.database.url)
    try:
        engine = make_engine(database_url(config))
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        current, head = schema.current(engine), schema.head()
        engine.dispose()
    except Exception as e:
        return _line(echo, False, "database", f"{where}: {e.__class__.__name__}: {e}"[:300])
    # a check only looks: an empty or older schema is what `mailbot db upgrade` (or the daemon) is for
    if current == head:
        return _line(echo, True, "database", f"{where}, schema {current} (newest)")
    return _line(echo, True, "database", f"{where}, schema {current or 'empty'}; "
                                         f"{head} is newer: the daemon or `mailbot db upgrade` will bring it up")


def check_mailbox(config: Config, echo: Callable[[str], None]) -> bool:
    m = config.mailbox
    if m.source == "maildir":
        p = config.path(m.maildir_path)
        return _line(echo, p.is_dir() or not p.exists(), "mailbox", f"maildir {p}")
    from mailbot.imap import probe
    from mailbot.source import SourceError

    try:
        info = probe(m)
    except SourceError as e:
        return _line(echo, False, "mailbox", str(e))
    caps = ", ".join(k.upper() for k in ("move", "idle") if info[k]) or "no MOVE, no IDLE"
    return _line(echo, True, "mailbox", f"imap {m.user}@{m.host}:{m.port} folder {m.folder}: "
                                        f"{info['messages']} messages; {caps}")


def check_outgoing(config: Config, echo: Callable[[str], None]) -> bool:
    o = config.outgoing
    if o.transport == "maildir":
        return _line(echo, True, "outgoing", f"maildir {config.path(o.maildir_path)}")
    from mailbot.transports import DeliveryError, SmtpTransport

    try:
        SmtpTransport(o).probe()
    except (DeliveryError, ConfigError) as e:
        return _line(echo, False, "outgoing", str(e))
    return _line(echo, True, "outgoing", f"smtp {o.host}:{o.port} ({o.security})"
                                         + (f" as {o.user}" if o.user else ""))


def check_templates(config: Config, echo: Callable[[str], None]) -> bool:
    from mailbot.render import SAMPLE_CONTEXT, Renderer, TemplateError

    try:
        r = Renderer(config.path(config.templates.dir) if config.templates.dir else None, config.templates.language)
        names = r.names()
        for name in names:
            r.render(name, SAMPLE_CONTEXT)
    except TemplateError as e:
        return _line(echo, False, "templates", str(e))
    return _line(echo, True, "templates", ", ".join(names))
