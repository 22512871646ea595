"""Custom field values live in one JSON column, Client.custom (JSONB on PostgreSQL).

Why: no ALTER TABLE at run time, one row read for a whole card, and an expression index
per field makes filtering and sorting by that field an index walk (see bench/ and
DESIGN.md). The SQL expression used in queries must be exactly the one indexed, so both
come from here. Keys are validated slugs ([a-z][a-z0-9_]*), which is what makes it safe
to render them into SQL text; values always travel as bound parameters.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, cast, func, literal_column, text
from sqlalchemy.dialects.postgresql import JSONB

from crm.extensions import db

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def _checked(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise ValueError(f"invalid custom field key {key!r}")
    return key


def dialect_name() -> str:
    return db.session.get_bind().dialect.name


def value_expr(key: str) -> ColumnElement[Any]:
    """The indexed SQL expression for a custom field's value."""
    from crm.clients.models import Client

    key = _checked(key)
    if dialect_name() == "postgresql":
        return Client.custom.op("->")(literal_column(f"'{key}'"))
    return func.json_extract(Client.custom, literal_column(f"'$.{key}'"))


def bind_value(value: Any) -> ColumnElement[Any] | Any:
    """A comparison operand for value_expr: a JSONB literal on PostgreSQL (so jsonb
    compares jsonb and the index applies), the plain value on SQLite."""
    if dialect_name() == "postgresql":
        return cast(value, JSONB)  # the JSONB bind type serialises the value itself
    return value


def index_ddl(key: str, index_name: str) -> str:
    key = _checked(key)
    if dialect_name() == "postgresql":
        # NULLS FIRST: empty values sort as the smallest on both databases.
        return (
            f"CREATE INDEX IF NOT EXISTS {index_name} "
            f"ON clients ((custom -> '{key}') NULLS FIRST, id)"
        )
    return f"CREATE INDEX IF NOT EXISTS {index_name} ON clients (json_extract(custom, '$.{key}'))"


def create_index(key: str) -> None:
    db.session.execute(text(index_ddl(key, index_name(key))))


def drop_index(key: str) -> None:
    db.session.execute(text(f"DROP INDEX IF EXISTS {index_name(_checked(key))}"))


def index_name(key: str) -> str:
    return f"ix_cf_{_checked(key)}"


def existing_indexes() -> set[str]:
    """Names of the custom field indexes present in the database (the inspector
    cannot reflect expression indexes, so ask the catalogue directly)."""
    if dialect_name() == "postgresql":
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'clients'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'clients'"
    names = db.session.scalars(text(sql))
    return {name for name in names if name.startswith("ix_cf_")}
