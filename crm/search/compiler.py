"""Filter tree -> one SQLAlchemy condition on Client.

Rules every compiler here keeps:
- Values only ever travel as bound parameters. The only text rendered into SQL is
  custom field keys, which are validated slugs (crm.fields.indexes).
- NOT means "the others": it compiles to `(child) IS NOT TRUE`, which is TRUE where the
  child is FALSE or NULL. A comparison on a missing custom value is NULL (`NULL != 'x'`),
  and plain `NOT` of NULL is NULL, which would drop the row from both sides. Leaves
  therefore need no `expr IS NOT NULL` guard, and carry none: on SQLite the guard is
  checked against the table row, so counting an OR of two custom-field conditions read
  every match from the table instead of the indexes alone (20x slower at 1M clients;
  bench/README.md, "Search").
- An empty value (missing custom key, '' in a core column, no owner, no tags) never
  matches a comparison, != included; only IS EMPTY finds it. A checkbox is the
  exception: missing counts as 0 (no).
- Custom fields are compared through exactly the indexed expression
  (indexes.value_expr) against indexes.bind_value, so their expression indexes apply.
- The user's scope is not added here: client_condition (services) and list_clients
  AND it in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    and_,
    cast,
    event,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

from crm.auth.models import User
from crm.clients.models import Client, Tag, client_tags
from crm.fields import indexes
from crm.fields.values import FieldValueError, parse_phone
from crm.search.fields import Catalog, SearchField, ValueType
from crm.search.tree import And, Condition, Node, Not, Op, RelativeDate, Scalar, Text
from crm.text import fold


@dataclass(frozen=True)
class SearchContext:
    """What a query's meaning depends on besides the data: today's date and the time
    zone (for -30d and for which day a timestamp falls on), the default phone region."""

    today: date
    zone: tzinfo
    phone_region: str = "PL"

    @classmethod
    def current(cls) -> SearchContext:
        from crm.org.services import organisation

        org = organisation()
        try:
            zone: tzinfo = ZoneInfo(org.timezone)
        except (ValueError, KeyError):
            zone = UTC
        return cls(datetime.now(zone).date(), zone, org.default_phone_region)


# --- accent and case folding in SQL ----------------------------------------------------
# crm.text.fold in SQL. SQLite calls the Python function itself (registered on every
# connection). PostgreSQL has no such function without an extension, so fold() is
# tabulated for Latin, Greek and Cyrillic letters and combining marks: characters that
# fold to several (ß -> ss) are replaced first, then translate() maps single characters
# and deletes combining marks. Outside these blocks PostgreSQL leaves characters as
# they are.

_BLOCKS = [
    (0x41, 0x5A),
    (0xA0, 0x24F),
    (0x300, 0x36F),
    (0x370, 0x52F),
    (0x1E00, 0x1EFF),
    (0xFB00, 0xFB06),
]


def _fold_tables() -> tuple[list[tuple[str, str]], str, str]:
    replaced: list[tuple[str, str]] = []
    mapped_from, mapped_to, deleted = [], [], []
    for start, end in _BLOCKS:
        for code in range(start, end + 1):
            ch = chr(code)
            folded = fold(ch)
            if folded == ch:
                continue
            if len(folded) == 1:
                mapped_from.append(ch)
                mapped_to.append(folded)
            elif not folded:
                deleted.append(ch)
            else:
                replaced.append((ch, folded))
    # replace() runs first, translate() second: what replace() writes must pass
    # translate() unchanged. (translate() deletes the characters of `from` beyond the end
    # of `to`.)
    source = set(mapped_from + deleted)
    assert not any(set(target) & source for _ch, target in replaced)
    return replaced, "".join(mapped_from + deleted), "".join(mapped_to)


FOLD_REPLACED, FOLD_FROM, FOLD_TO = _fold_tables()


def _sqlite_fold(value: Any) -> str | None:
    if value is None:
        return None
    return fold(value if isinstance(value, str) else str(value))


@event.listens_for(Engine, "connect")
def _register_sqlite_fold(dbapi_connection: Any, connection_record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        dbapi_connection.create_function("crm_fold", 1, _sqlite_fold, deterministic=True)


def fold_sql(expr: ColumnElement[Any]) -> ColumnElement[str]:
    """The folded form of a text expression, as crm.text.fold would give it."""
    if indexes.dialect_name() == "sqlite":
        return func.crm_fold(expr)
    out: ColumnElement[Any] = expr
    for source, target in FOLD_REPLACED:
        out = func.replace(out, literal(source), literal(target))
    return func.translate(out, literal(FOLD_FROM), literal(FOLD_TO))


def _contains(folded: ColumnElement[str], needle: str) -> ColumnElement[bool]:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return folded.like(f"%{escaped}%", escape="\\")


# --- values ----------------------------------------------------------------------------


def needle(field: SearchField, value: str) -> str:
    """What `~` looks for: the folded text; for phones without spacing characters
    (stored phones are E.164, '601 234' means '601234')."""
    folded = fold(value)
    if field.value_type == ValueType.PHONE:
        folded = "".join(ch for ch in folded if ch not in " -()/.")
    return folded


def text_value(field: SearchField, value: str, ctx: SearchContext) -> str:
    """A value compared with = != < ... : phones as stored (E.164) when they parse."""
    if field.value_type == ValueType.PHONE:
        try:
            return parse_phone(value, ctx.phone_region)
        except FieldValueError:
            return value
    return value


def day(value: Scalar, ctx: SearchContext) -> date:
    if isinstance(value, RelativeDate):
        return value.on(ctx.today)
    assert isinstance(value, date)
    return value


def checkbox_states(op: Op, values: Iterable[Scalar]) -> frozenset[int]:
    """Which stored states (0 or 1; missing is 0) a checkbox condition accepts."""
    wanted = [1 if v is True or v == 1 else 0 for v in values]
    tests: dict[Op, Callable[[int, int], bool]] = {
        Op.EQ: lambda s, v: s == v,
        Op.IN: lambda s, v: s == v,
        Op.NE: lambda s, v: s != v,
        Op.LT: lambda s, v: s < v,
        Op.LE: lambda s, v: s <= v,
        Op.GT: lambda s, v: s > v,
        Op.GE: lambda s, v: s >= v,
    }
    test = tests[op]
    return frozenset(s for s in (0, 1) if any(test(s, v) for v in wanted))


def _compare(left: Any, op: Op, right: Any) -> ColumnElement[bool]:
    if op == Op.EQ:
        return left == right
    if op == Op.NE:
        return left != right
    if op == Op.LT:
        return left < right
    if op == Op.LE:
        return left <= right
    if op == Op.GT:
        return left > right
    return left >= right


# --- one compiler per kind of field ----------------------------------------------------


def _texts(cond: Condition) -> list[str]:
    """The values of a condition on a text-like field (resolve checked they are text)."""
    return [str(v) for v in cond.values]


Compiler = Callable[[SearchField, Condition, SearchContext], ColumnElement[bool]]


def _core(field: SearchField, cond: Condition, ctx: SearchContext) -> ColumnElement[bool]:
    """Core text columns: empty is '' (never NULL)."""
    column = getattr(Client, field.column)
    op = cond.op
    if op == Op.EMPTY:
        return column == ""
    if op == Op.NOT_EMPTY:
        return column != ""
    if op == Op.CONTAINS:
        return and_(column != "", _contains(fold_sql(column), needle(field, _texts(cond)[0])))
    values = [text_value(field, v, ctx) for v in _texts(cond)]
    if op == Op.IN:
        return column.in_(values)
    condition = _compare(column, op, values[0])
    # '' sorts first and differs from everything: keep it out of these.
    if op in (Op.NE, Op.LT, Op.LE):
        return and_(condition, column != "")
    return condition


def _custom_text(key: str) -> ColumnElement[Any]:
    """A custom value as SQL text (for `~`)."""
    if indexes.dialect_name() == "postgresql":
        return func.jsonb_extract_path_text(Client.custom, key)
    return indexes.value_expr(key)


def _multi_has(key: str, value: str) -> ColumnElement[bool]:
    """A multiple-choice list contains `value`."""
    if indexes.dialect_name() == "postgresql":
        return indexes.value_expr(key).op("@>", is_comparison=True)(cast([value], JSONB))
    items = func.json_each(Client.custom, f"$.{key}").table_valued("value")
    return exists(select(1).select_from(items).where(items.c.value == value).correlate(Client))


def _checkbox(expr: ColumnElement[Any], states: frozenset[int]) -> ColumnElement[bool]:
    if not states:
        return false()
    if states == {0, 1}:
        return true()
    if states == {1}:
        return expr == indexes.bind_value(1)
    return or_(expr.is_(None), expr == indexes.bind_value(0))


def _custom(field: SearchField, cond: Condition, ctx: SearchContext) -> ColumnElement[bool]:
    key = field.column
    expr = indexes.value_expr(key)
    op = cond.op
    kind = field.value_type
    if kind == ValueType.CHECKBOX:
        return _checkbox(expr, checkbox_states(op, cond.values))
    if op == Op.EMPTY:
        return expr.is_(None)
    if op == Op.NOT_EMPTY:
        return expr.is_not(None)
    present = expr.is_not(None)
    if kind == ValueType.MULTI:
        has = [_multi_has(key, v) for v in _texts(cond)]
        if op == Op.NE:
            return and_(present, not_(has[0]))
        return and_(present, or_(*has))
    if op == Op.CONTAINS:
        text = _custom_text(key)
        return and_(text.is_not(None), _contains(fold_sql(text), needle(field, _texts(cond)[0])))
    values: list[Any]
    if kind == ValueType.DATE:
        values = [day(v, ctx).isoformat() for v in cond.values]
    elif kind == ValueType.NUMBER:
        values = list(cond.values)
    else:
        values = [text_value(field, v, ctx) for v in _texts(cond)]
    # `expr < :v` (NULL, so no match, where the value is missing): an index range scan
    # on the field's index, answered from the index alone when only counting.
    if op == Op.IN:
        return expr.in_([indexes.bind_value(v) for v in values])
    return _compare(expr, op, indexes.bind_value(values[0]))


def _owner(field: SearchField, cond: Condition, ctx: SearchContext) -> ColumnElement[bool]:
    """The owner by email or full name, ignoring case and accents."""
    op = cond.op
    if op == Op.EMPTY:
        return Client.owner_id.is_(None)
    if op == Op.NOT_EMPTY:
        return Client.owner_id.is_not(None)
    if op == Op.CONTAINS:
        wanted = needle(field, _texts(cond)[0])
        match = or_(
            _contains(fold_sql(User.email), wanted), _contains(fold_sql(User.full_name), wanted)
        )
    else:
        folded = [fold(v) for v in _texts(cond)]
        match = or_(fold_sql(User.email).in_(folded), fold_sql(User.full_name).in_(folded))
    users = select(User.id).where(match)
    if op == Op.NE:
        return and_(Client.owner_id.is_not(None), Client.owner_id.not_in(users))
    return and_(Client.owner_id.is_not(None), Client.owner_id.in_(users))


def _tags(field: SearchField, cond: Condition, ctx: SearchContext) -> ColumnElement[bool]:
    """Tag names ignoring case and accents. Written as `id IN (clients with such a
    tag)`: the tag ids come from the small tags table once, then the tag index."""

    def tagged(match: ColumnElement[bool]) -> ColumnElement[bool]:
        tag_ids = select(Tag.id).where(match)
        return Client.id.in_(
            select(client_tags.c.client_id).where(client_tags.c.tag_id.in_(tag_ids))
        )

    any_tag = Client.id.in_(select(client_tags.c.client_id))
    op = cond.op
    if op == Op.EMPTY:
        return not_(any_tag)
    if op == Op.NOT_EMPTY:
        return any_tag
    if op == Op.CONTAINS:
        return tagged(_contains(fold_sql(Tag.name), needle(field, _texts(cond)[0])))
    folded = [fold(v) for v in _texts(cond)]
    if op == Op.NE:
        return and_(any_tag, not_(tagged(fold_sql(Tag.name) == folded[0])))
    return tagged(fold_sql(Tag.name).in_(folded))


def _timestamp(field: SearchField, cond: Condition, ctx: SearchContext) -> ColumnElement[bool]:
    """created/updated against days in the organisation's time zone: `created =
    2026-01-31` is the whole local day, `created < 2026-01-31` ends at its start."""
    column = getattr(Client, field.column)

    def before(d: date | None) -> ColumnElement[bool]:
        """column < the start of day d (None: the day after the last date)."""
        if d is None:
            return true()
        try:
            start = datetime(d.year, d.month, d.day, tzinfo=ctx.zone).astimezone(UTC)
        except (OverflowError, ValueError):  # before year 1 or after 9999 in UTC
            return false() if d.year < 5000 else true()
        return column < start

    def following(d: date) -> date | None:
        return None if d == date.max else d + timedelta(days=1)

    def on(d: date) -> ColumnElement[bool]:
        return and_(not_(before(d)), before(following(d)))

    days = [day(v, ctx) for v in cond.values]
    op = cond.op
    if op == Op.IN:
        return or_(*(on(d) for d in days))
    d = days[0]
    if op == Op.EQ:
        return on(d)
    if op == Op.NE:
        return not_(on(d))
    if op == Op.LT:
        return before(d)
    if op == Op.LE:
        return before(following(d))
    if op == Op.GT:
        return not_(before(following(d)))
    return not_(before(d))


COMPILERS: dict[str, Compiler] = {
    "core": _core,
    "custom": _custom,
    "owner": _owner,
    "tags": _tags,
    "timestamp": _timestamp,
}


def register_compiler(kind: str, compiler: Compiler) -> None:
    """For new kinds of searchable things (consent state, list membership)."""
    COMPILERS[kind] = compiler


def free_text(text: str) -> ColumnElement[bool]:
    """The quick search: the folded name, company, email and phone contain the text."""
    return _contains(Client.search_text, fold(text))


def compile_tree(node: Node, catalog: Catalog, ctx: SearchContext) -> ColumnElement[bool]:
    """The condition for a resolved tree (crm.search.fields.resolve), WITHOUT the
    user's scope: AND visible_clients(user) in (services.client_condition does)."""
    if isinstance(node, Text):
        return free_text(node.text)
    if isinstance(node, Condition):
        field = catalog.get(node.field)
        if field is None or field.archived:
            # Resolve first; a stored tree may name a field that is gone since.
            field = catalog.lookup(node.field, node.pos)
        return COMPILERS[field.kind](field, node, ctx)
    if isinstance(node, Not):
        # IS NOT TRUE, not NOT: the complement includes the rows where the child is NULL.
        return compile_tree(node.child, catalog, ctx).is_not(true())
    parts = [compile_tree(c, catalog, ctx) for c in node.children]
    return and_(*parts) if isinstance(node, And) else or_(*parts)
