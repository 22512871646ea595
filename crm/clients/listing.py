"""The client list query: quick search, scope, sort by core or custom field, keyset
pagination.

Keyset (seek) pagination: each page starts after the last row of the previous one, so
page 2000 is answered from the index as fast as page 1, where OFFSET would walk all the
rows before it. Custom field values may be empty (NULL); empties sort as the smallest
value on both databases, and the query walks the empty and the filled part of the index
as two regions so that every part stays an index range scan.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select, tuple_
from sqlalchemy.orm import joinedload, selectinload

from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.extensions import db
from crm.fields import indexes
from crm.fields.models import CustomField
from crm.text import fold

# Counting stops here: an exact count of a broad filter costs a scan of every match
# (bench/); the list offers the exact figure on request instead.
COUNT_CAP = 1_000
# "Count all" stops here: PostgreSQL cannot count ~50,000+ matches of 1M clients within
# the 200 ms budget (not even bare SQL: it visits every matching heap page), so past
# this the list says "more than 10,000" (bench/README.md, "Search", finding 2).
EXACT_COUNT_CAP = 10_000
PER_PAGE = 50


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sortable: bool
    field: CustomField | None = None


CORE_COLUMNS = [
    Column("email", _l("Email"), True),
    Column("phone", _l("Phone"), False),
    Column("city", _l("City"), True),
    Column("company", _l("Company"), True),
    Column("owner", _l("Owner"), False),
    Column("tags", _l("Tags"), False),
    Column("created", _l("Created"), True),
    Column("updated", _l("Updated"), True),
]
DEFAULT_CORE = ["email", "phone", "city"]


def available_columns(fields: Sequence[CustomField]) -> list[Column]:
    custom = [Column(f"cf:{f.key}", f.label, f.indexed, f) for f in fields]
    return CORE_COLUMNS + custom


def chosen_columns(saved: list[str] | None, fields: Sequence[CustomField]) -> list[Column]:
    by_key = {c.key: c for c in available_columns(fields)}
    if saved is None:
        keys = DEFAULT_CORE + [f"cf:{f.key}" for f in fields if f.show_in_list]
    else:
        keys = saved
    return [by_key[k] for k in keys if k in by_key]


CORE_SORTS: dict[str, tuple[str, ...]] = {
    "name": ("last_name", "first_name"),
    "email": ("email",),
    "city": ("city",),
    "company": ("company",),
    "created": ("created_at",),
    "updated": ("updated_at",),
}


def resolve_sort(
    sort: str, fields: Sequence[CustomField]
) -> tuple[str, list[ColumnElement[Any]], bool]:
    """(the sort key actually used, its ORDER BY expressions before id, nullable?).
    Unknown keys fall back to the name."""
    if sort.startswith("cf:"):
        key = sort[3:]
        if any(f.key == key and f.indexed for f in fields):
            return sort, [indexes.value_expr(key)], True
        sort = "name"
    attrs = CORE_SORTS.get(sort) or CORE_SORTS["name"]
    sort = sort if sort in CORE_SORTS else "name"
    return sort, [getattr(Client, a) for a in attrs], False


def row_key(client: Client, sort: str) -> list[Any]:
    """The cursor values of a row for the given (resolved) sort."""
    if sort.startswith("cf:"):
        return [client.custom.get(sort[3:]), client.id]
    return [*(getattr(client, a) for a in CORE_SORTS[sort]), client.id]


@dataclass
class ListRequest:
    q: str = ""
    sort: str = "name"
    desc: bool = False
    after: str | None = None
    before: str | None = None
    per_page: int = PER_PAGE


@dataclass
class ListResult:
    clients: list[Client]
    # None: not counted with the page (PostgreSQL, more than one page of matches); the
    # list asks /clients/count?cap=list for it after the rows are shown.
    count: int | None
    count_capped: bool
    next_cursor: str | None
    prev_cursor: str | None
    sort: str
    desc: bool
    columns: list[Column] = field(default_factory=list)


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str | None, width: int) -> list[Any] | None:
    """The cursor's values, or None for anything malformed (then: the first page)."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != width or not isinstance(values[-1], int):
        return None
    out = []
    for v in values:
        if isinstance(v, dict) and isinstance(v.get("dt"), str):
            try:
                v = datetime.fromisoformat(v["dt"])
            except ValueError:
                return None
        elif not (v is None or isinstance(v, str | int | float)):
            return None
        out.append(v)
    return out


def search_condition(q: str) -> ColumnElement[bool] | None:
    """Every word of the quick search must appear in the folded name, email or phone."""
    words = fold(q).split()
    if not words:
        return None
    conditions = []
    for word in words[:8]:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Client.search_text.like(f"%{escaped}%", escape="\\"))
    return and_(*conditions)


def base_query(
    user: User, q: str, where: ColumnElement[bool] | None = None
) -> Select[tuple[Client]]:
    """Clients the user may see, matching the quick search and an optional filter
    condition (the filter tree compiles to one)."""
    stmt = select(Client).where(visible_clients(user))
    if where is not None:
        stmt = stmt.where(where)
    condition = search_condition(q)
    if condition is not None:
        stmt = stmt.where(condition)
    return stmt


def _order_key(key: ColumnElement[Any], desc: bool, nullable: bool) -> Any:
    """ORDER BY spelled as the index is built. On PostgreSQL the custom field indexes are
    NULLS FIRST (empties smallest), and plain ASC/DESC would not match them."""
    ordered = key.desc() if desc else key.asc()
    if nullable and indexes.dialect_name() == "postgresql":
        return ordered.nulls_last() if desc else ordered.nulls_first()
    return ordered


def _fetch(
    stmt: Select[tuple[Client]],
    exprs: list[ColumnElement[Any]],
    nullable: bool,
    desc: bool,
    cursor: list[Any] | None,
    limit: int,
) -> list[Client]:
    """Up to `limit` rows in (exprs, id) order after `cursor` (exclusive)."""

    def ordered(
        query: Select[tuple[Client]], by: list[ColumnElement[Any]]
    ) -> Select[tuple[Client]]:
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


SORT_INDEXES = {
    "name": "ix_clients_name_order",
    "email": "ix_clients_email_order",
    "city": "ix_clients_city_order",
    "company": "ix_clients_company_order",
    "created": "ix_clients_created_order",
    "updated": "ix_clients_updated_order",
}


def _sort_index_pays(matches: int, capped: bool, per_page: int) -> bool:
    """Walking the sort index and testing the filter on each row reads about
    per_page * total / matches rows; reading every match through the filter's index and
    sorting them reads `matches`. The first wins when matches > sqrt(per_page * total)."""
    if capped:
        return True
    total = db.session.scalar(select(func.max(Client.id))) or 0
    return matches > math.sqrt(per_page * total)


def count_clients(user: User, q: str, where: ColumnElement[bool] | None, cap: int) -> int:
    """How many clients match, counting at most cap + 1 (so a broad filter stays cheap)."""
    matches = base_query(user, q, where).with_only_columns(Client.id).order_by(None)
    if cap:
        matches = matches.limit(cap + 1)
    return db.session.scalar(select(func.count()).select_from(matches.subquery())) or 0


def list_clients(
    user: User,
    request: ListRequest,
    fields: Sequence[CustomField],
    columns: list[Column],
    where: ColumnElement[bool] | None = None,
) -> ListResult:
    sort, exprs, nullable = resolve_sort(request.sort, fields)
    # SQLite needs the (capped) count before the page, to choose its plan. PostgreSQL
    # does not, and there the capped count of a broad filter is a scan until COUNT_CAP
    # matches (10-20 ms at 1M clients): the page goes without it and the list loads it
    # in a second request (bench/README.md, "Search").
    sqlite = indexes.dialect_name() == "sqlite"
    count: int | None = count_clients(user, request.q, where, COUNT_CAP) if sqlite else None
    capped = count is not None and count > COUNT_CAP

    stmt = base_query(user, request.q, where)
    filtered = where is not None or bool(request.q.strip())
    if filtered and sqlite and _sort_index_pays(count or 0, capped, request.per_page):
        # SQLite's planner picks the filter's index and sorts every match, whatever the
        # LIMIT; for a broad filter, walking the sort index is far cheaper (bench/).
        index = indexes.index_name(sort[3:]) if sort.startswith("cf:") else SORT_INDEXES[sort]
        # A named index that is missing is an error on SQLite (custom field indexes can
        # be, until `flask fields reindex`): then let the planner choose.
        if not sort.startswith("cf:") or index in indexes.existing_indexes():
            stmt = stmt.with_hint(Client, f"INDEXED BY {index}", "sqlite")
    options = [joinedload(Client.owner).load_only(*User.display_columns())]
    if any(c.key == "tags" for c in columns):
        options.append(selectinload(Client.tags))
    stmt = stmt.options(*options)

    width = len(exprs) + 1
    limit = request.per_page + 1
    backwards = request.before is not None and request.after is None
    cursor = decode_cursor(request.before if backwards else request.after, width)
    rows = _fetch(stmt, exprs, nullable, request.desc != backwards, cursor, limit)
    more = len(rows) > request.per_page
    rows = rows[: request.per_page]
    if backwards:
        rows.reverse()
    has_next = more if not backwards else True
    has_prev = (more if backwards else cursor is not None) and bool(rows)
    if backwards and cursor is None:
        has_next = False  # "last page": nothing after it
    if count is None and cursor is None and not more and not backwards:
        count = len(rows)  # the first page holds every match: counted for free
        capped = count > COUNT_CAP

    return ListResult(
        clients=rows,
        count=None if count is None else min(count, COUNT_CAP),
        count_capped=capped,
        next_cursor=encode_cursor(row_key(rows[-1], sort)) if rows and has_next else None,
        prev_cursor=encode_cursor(row_key(rows[0], sort)) if rows and has_prev else None,
        sort=sort,
        desc=request.desc,
        columns=columns,
    )
