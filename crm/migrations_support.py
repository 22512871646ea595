"""Shared between Alembic's env.py and the models-vs-migrations test."""

from __future__ import annotations

from typing import Any

# Expression indexes on custom fields are created and dropped by the app at run time
# (crm/fields/indexes.py); Alembic must neither create nor drop them.
APP_MANAGED_INDEX_PREFIX = "ix_cf_"
# Expression indexes the migrations create by hand: SQLite's reflection cannot read
# them back, so autogenerate leaves them alone (a test checks they exist).
EXPRESSION_INDEXES = frozenset({"ix_clients_email_lower"})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    if type_ != "index" or not name:
        return True
    return not (name.startswith(APP_MANAGED_INDEX_PREFIX) or name in EXPRESSION_INDEXES)
