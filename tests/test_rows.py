"""`Row`, the tables' base: a row built or changed through its fast path holds exactly what
SQLModel's own constructor and assignment give it (issue #16), for every table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlmodel import SQLModel

from mailbot.store import tables
from mailbot.store.rows import Row

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TABLES = sorted((m.class_ for m in SQLModel._sa_registry.mappers if issubclass(m.class_, Row)),
                key=lambda c: c.__name__)


@contextmanager
def sqlmodels_own_path(cls: type[Row]) -> Iterator[None]:
    plan = cls._plan()
    plan.fast = False
    try:
        yield
    finally:
        plan.fast = True


def sample(cls: type[Row], every: int) -> dict[str, Any]:
    """A value for every `every`-th column (the rest left to their defaults)."""
    values: dict[str, Any] = {}
    for i, column in enumerate(cls.__table__.columns):  # type: ignore[attr-defined]
        if i % every:
            continue
        kind = column.type.python_type
        values[column.key] = {str: f"v{i}", int: i, bool: True, bytes: b"raw", datetime: NOW}.get(kind)
    return values


def held(row: Row) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    state = inspect(row)
    history = {a.key: (tuple(a.history.added), tuple(a.history.deleted)) for a in state.attrs}
    return ({k: v for k, v in row.__dict__.items() if k != "_sa_instance_state"},
            set(row.__pydantic_fields_set__), history)


def test_every_table_takes_the_fast_path() -> None:
    assert {c.__name__ for c in TABLES} >= {"StoredMessage", "Ticket", "TicketEvent", "TicketSender", "OutboxMail"}
    assert all(c._plan().fast for c in TABLES)


@pytest.mark.parametrize("every", [1, 2, 3])
@pytest.mark.parametrize("cls", TABLES, ids=lambda c: c.__name__)
def test_a_row_built_and_changed_holds_what_sqlmodel_gives_it(cls: type[Row], every: int) -> None:
    values = sample(cls, every)
    fast = cls(**values)
    with sqlmodels_own_path(cls):
        own = cls(**values)
    assert held(fast) == held(own)

    # the defaults are each row's own (a list default is not shared between rows)
    assert held(cls(**values)) == held(fast)

    changes = sample(cls, every + 1)
    for name, value in changes.items():
        setattr(fast, name, value)
    with sqlmodels_own_path(cls):
        for name, value in changes.items():
            setattr(own, name, value)
    assert held(fast) == held(own)


def test_a_name_that_is_not_a_column_takes_sqlmodels_path() -> None:
    row = tables.Ticket(state="open", opened_at=NOW, updated_at=NOW)
    with pytest.raises(ValueError, match="no field"):
        row.not_a_column = 1  # type: ignore[attr-defined]
