"""Shared between Alembic's env.py and the models-vs-migrations test."""

from __future__ import annotations

from typing import Any

# Expression indexes on custom fields are created and dropped by the app at run time
# (crm/fields/indexes.py); Alembic must neither create nor drop them.
APP_MANAGED_INDEX_PREFIX = "ix_cf_"


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "index" and name and name.startswith(APP_MANAGED_INDEX_PREFIX))
