"""Schema changes go through Alembic migrations (mailbot/migrations/).

`upgrade(engine)` brings a database to the newest schema; it runs when a
desk starts and as `mailbot db upgrade`. On PostgreSQL it holds an advisory
lock, on SQLite the write lock, so processes starting together migrate once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK = 0x6D61696C  # "mail": the advisory lock key of schema changes


def _config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        elif conn.dialect.name == "sqlite":
            # SQLite's write lock first: two processes starting on a new file (the daemon and a
            # `mailbot status`) migrate one after the other, each migration all or nothing
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        command.upgrade(_config(conn), revision)
