"""Proposed changes to crm/clients/listing.py, tried on copies here (bench --with-fixes)
so their effect can be measured before the lead applies them to the app.

1. PostgreSQL: order the filled region by `expr ASC NULLS FIRST` / `expr DESC NULLS LAST`
   so the ORDER BY matches the index `(custom -> 'key') NULLS FIRST, id` (a backward
   scan of it is DESC NULLS LAST). The app orders by plain `expr DESC` (= DESC NULLS FIRST
   on PostgreSQL) or `expr ASC` (= ASC NULLS LAST): neither matches, so PostgreSQL cannot
   walk the index and sorts every matching row.
2. A filter that matches many rows should not drive the query: walking the sort index and
   testing the filter on each row reads about per_page * total / matches rows, while the
   filter index reads every match and sorts them all. SQLite's planner always takes the
   filter index (it does not weigh the LIMIT), so when the capped count shows a broad
   filter, the fetch uses the filter with its index disabled (`+expr`, SQLite's documented
   way to keep a term off an index). The count runs first, as it is needed anyway.
3. Optional (--count-cap): a lower count cap. On PostgreSQL the capped count of a broad
   custom-field filter is a sequential scan until COUNT_CAP + 1 matches are found (the
   expression index cannot serve an index-only scan), ~100k rows at 1M clients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal, or_, select, tuple_

from crm.auth.models import User
from crm.clients import listing
from crm.clients.models import Client
from crm.extensions import db
from crm.fields import indexes
from crm.fields.models import CustomField

ClientSelect = Select[tuple[Client]]


def _order_key(key: ColumnElement[Any], desc: bool, nullable: bool) -> Any:
    ordered = key.desc() if desc else key.asc()
    if nullable and indexes.dialect_name() == "postgresql":
        return ordered.nulls_last() if desc else ordered.nulls_first()
    return ordered


def fetch(
    stmt: Select[tuple[Client]],
    exprs: list[ColumnElement[Any]],
    nullable: bool,
    desc: bool,
    cursor: list[Any] | None,
    limit: int,
) -> list[Client]:
    """listing._fetch with fix 1 (the ORDER BY spelled as the index is built)."""

    def ordered(query: ClientSelect, by: list[ColumnElement[Any]]) -> ClientSelect:
        keys = [_order_key(k, desc, nullable) for k in by]
        keys.append(Client.id.desc() if desc else Client.id.asc())
        return query.order_by(*keys).limit(limit)

    if not nullable:
        if cursor is not None:
            keys = [*exprs, Client.id]
            left = tuple_(*keys)
            right = tuple_(*(literal(v, type_=k.type) for k, v in zip(keys, cursor, strict=True)))
            stmt = stmt.where(left < right if desc else left > right)
        return list(db.session.scalars(ordered(stmt, exprs)))

    (expr,) = exprs
    null_region = stmt.where(expr.is_(None))
    filled_region = stmt.where(expr.is_not(None))
    regions = ["filled", "null"] if desc else ["null", "filled"]
    if cursor is not None:
        value, last_id = cursor
        start = "null" if value is None else "filled"
        regions = regions[regions.index(start) :]
        id_after = Client.id < last_id if desc else Client.id > last_id
        if start == "null":
            null_region = null_region.where(id_after)
        else:
            bound = indexes.bind_value(value)
            if desc:
                filled_region = filled_region.where(expr <= bound, or_(expr < bound, id_after))
            else:
                filled_region = filled_region.where(expr >= bound, or_(expr > bound, id_after))
    rows: list[Client] = []
    for region in regions:
        if len(rows) >= limit:
            break
        query = null_region if region == "null" else filled_region
        by = [] if region == "null" else [expr]
        rows.extend(db.session.scalars(ordered(query, by).limit(limit - len(rows))))
    return rows


def sort_index_pays(matches: int, capped: bool) -> bool:
    """Fix 2's rule: walk the sort index when it reads fewer rows than the filter index:
    per_page * total / matches < matches, i.e. matches > sqrt(per_page * total)."""
    if capped:
        return True
    total = db.session.scalar(select(func.max(Client.id))) or 0
    return matches > math.sqrt(listing.PER_PAGE * total)


def list_clients(
    user: User,
    request: listing.ListRequest,
    fields: Sequence[CustomField],
    columns: list[listing.Column],
    where: ColumnElement[bool] | None = None,
    unindexed: ColumnElement[bool] | None = None,
    count_cap: int = listing.COUNT_CAP,
) -> listing.ListResult:
    """listing.list_clients with fix 1 (via `fetch`) and fix 2: count first; on SQLite,
    when the filter is broad and the sort is an indexed custom field, fetch with
    `unindexed` (the same filter written with +expr) so the sort index drives the query."""
    sort, exprs, nullable = listing.resolve_sort(request.sort, fields)
    count_stmt = select(func.count()).select_from(
        listing.base_query(user, request.q, where)
        .with_only_columns(Client.id)
        .limit(count_cap + 1)
        .subquery()
    )
    count = db.session.scalar(count_stmt) or 0
    capped = count > count_cap
    fetch_where = where
    if (
        unindexed is not None
        and nullable
        and indexes.dialect_name() == "sqlite"
        and sort_index_pays(count, capped)
    ):
        fetch_where = unindexed
    stmt = listing.base_query(user, request.q, fetch_where)
    stmt = stmt.options(*listing_options(columns))

    width = len(exprs) + 1
    limit = request.per_page + 1
    backwards = request.before is not None and request.after is None
    cursor = listing.decode_cursor(request.before if backwards else request.after, width)
    rows = fetch(stmt, exprs, nullable, request.desc != backwards, cursor, limit)
    more = len(rows) > request.per_page
    rows = rows[: request.per_page]
    if backwards:
        rows.reverse()
    has_next = more if not backwards else True
    has_prev = (more if backwards else cursor is not None) and bool(rows)
    if backwards and cursor is None:
        has_next = False
    return listing.ListResult(
        clients=rows,
        count=min(count, count_cap),
        count_capped=capped,
        next_cursor=(
            listing.encode_cursor(listing.row_key(rows[-1], sort)) if rows and has_next else None
        ),
        prev_cursor=(
            listing.encode_cursor(listing.row_key(rows[0], sort)) if rows and has_prev else None
        ),
        sort=sort,
        desc=request.desc,
        columns=columns,
    )


def listing_options(columns: list[listing.Column]) -> list[Any]:
    from sqlalchemy.orm import joinedload, selectinload

    options: list[Any] = [joinedload(Client.owner)]
    if any(c.key == "tags" for c in columns):
        options.append(selectinload(Client.tags))
    return options
