"""Schema changes go through Alembic migrations (mailbot/store/migrations/).

`upgrade(engine)` brings a database to the newest schema; it runs as
`mailbot db upgrade`, when the daemon starts and in the commands that write
(`poll --once`, `flush`, `demo`, the staff actions). On PostgreSQL it holds an
advisory lock, on SQLite the write lock, so processes starting together migrate once.
Read-only commands (`show`, `tickets`, `status`, `outbox`, `digest --preview`) never
migrate: `require(engine)` refuses a schema that is behind, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from mailbot.errors import CommandFailed

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0016"
"""The newest revision, as the migrations say (tests/test_schema.py checks): a database already
there is told apart with one query, without loading Alembic and its scripts (a tenth of a
second of every start of the daemon and of every command that writes)."""
_LOCK = 0x6D61696C  # "mail": the advisory lock key of schema changes


def _config(connection: Connection) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def at_head(engine: Engine) -> bool:
    """Whether the database is at `HEAD`, in one query (False when it has no schema yet)."""
    try:
        with engine.connect() as conn:
            return [r for (r,) in conn.execute(text("SELECT version_num FROM alembic_version"))] == [HEAD]
    except SQLAlchemyError:
        return False  # no version table, or it cannot be read: Alembic looks, and says


class SchemaBehind(CommandFailed):
    """The database's schema is not the one this mailbot reads; the message says to upgrade."""


def require(engine: Engine) -> None:
    """Raise SchemaBehind unless the database is at the newest schema; never changes it."""
    if at_head(engine):
        return
    at, newest = current(engine), head()
    if at != newest:
        raise SchemaBehind(f"the database schema is {at or 'empty'}, this mailbot reads {newest}: "
                           "run `mailbot db upgrade` (the daemon also upgrades when it starts)")


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and at_head(engine):
        return
    from alembic import command

    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # A migration that rebuilds a table others refer to (Alembic's batch mode on SQLite)
            # drops the old table first, which SQLite refuses with foreign keys on. They are off
            # while migrating (the pragma is ignored inside a transaction) and checked before
            # the commit.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
                elif sqlite:
                    # SQLite's write lock first: two processes starting on a new file (the daemon and a
                    # `mailbot status`) migrate one after the other, each migration all or nothing
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                command.upgrade(_config(conn), revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"schema upgrade left {len(broken)} broken references, e.g. {broken[0]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
