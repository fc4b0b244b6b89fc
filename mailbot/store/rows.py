"""`Row`: the base of the desk's tables, SQLModel's table models made cheaper to build and change
(issue #16).

A table model's constructor and every attribute assignment went through SQLModel's generic
path: per field, a default computed through pydantic, then an assignment that told SQLAlchemy
and then pydantic's own `__setattr__` (which writes the same value into the same `__dict__`
again). The desk builds five or six rows a message and assigns a dozen columns more: that was
a sixth of the processing's CPU (`bench/ingest.py`, py-spy `--gil`).

Here a column is assigned through SQLAlchemy alone (its instrumentation writes the instance's
`__dict__`, which is where pydantic keeps the value too) and recorded as set, as pydantic
records it; the constructor does what SQLModel's table constructor does (the given fields, the
defaults of the others, the set fields recorded; relationships: the tables have none) with the
per-class field plan computed once. Anything else (a name that is not a column, a class with
aliases or relationships) takes SQLModel's own path.

tests/test_rows.py builds every table both ways and compares what each holds.
"""

from __future__ import annotations

from copy import deepcopy
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar

from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import SQLModel
from sqlmodel._compat import finish_init  # the flag SQLModel's own __init__ obeys (model_validate)

_IMMUTABLE = (type(None), bool, int, float, str, bytes, Enum, datetime, date, timedelta)
_NO_DEFAULT = object()


class _Plan:
    """Per table class: its columns, and per field how a constructor fills it when not given."""

    def __init__(self, cls: type[SQLModel]) -> None:
        mapper = cls.__mapper__  # type: ignore[attr-defined]
        self.columns = frozenset(attr.key for attr in mapper.column_attrs)
        self.fast = not cls.__sqlmodel_relationships__ and all(
            not f.alias and name in self.columns for name, f in cls.model_fields.items())
        self.fields: list[tuple[str, Any, Any]] = []
        """(name, a default shared by every row, a callable making one), for every field."""
        for name, f in cls.model_fields.items():
            if f.default_factory is not None:
                self.fields.append((name, _NO_DEFAULT, f.default_factory))
            elif f.is_required():
                self.fields.append((name, _NO_DEFAULT, None))
            elif isinstance(f.default, _IMMUTABLE):
                self.fields.append((name, f.default, None))
            else:  # a mutable default: each row gets its own copy, as pydantic gives it
                self.fields.append((name, _NO_DEFAULT, lambda d=f.default: deepcopy(d)))


class Row(SQLModel):
    __row_plans: ClassVar[dict[type, _Plan]] = {}

    @classmethod
    def _plan(cls) -> _Plan:
        plan = Row.__row_plans.get(cls)
        if plan is None:
            plan = Row.__row_plans[cls] = _Plan(cls)
        return plan

    def __init__(self, **data: Any) -> None:
        if not finish_init.get():
            return  # model_validate fills the row itself
        plan = type(self)._plan()
        if not plan.fast:
            super().__init__(**data)
            return
        given: set[str] = set()
        for name, default, make in plan.fields:
            if name in data:
                value = data[name]
                given.add(name)
            elif default is not _NO_DEFAULT:
                value = default
            elif make is not None:
                value = make()
            else:
                continue  # required and not given: left unset, as SQLModel leaves it
            set_attribute(self, name, value)
        object.__setattr__(self, "__pydantic_fields_set__", given)

    def __setattr__(self, name: str, value: Any) -> None:
        plan = type(self)._plan()
        if plan.fast and name in plan.columns:
            set_attribute(self, name, value)
            self.__pydantic_fields_set__.add(name)
        else:
            super().__setattr__(name, value)
