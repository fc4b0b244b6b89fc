"""Alembic environment: mailbot passes its own connection (see mailbot/store/schema.py)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from mailbot.store import tables  # noqa: F401  (registers the tables)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
