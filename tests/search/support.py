"""Shared by the search tests: the test fields, a random client population, a
plain-Python evaluation of a tree (the oracle the SQL must agree with) and hypothesis
strategies for trees."""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from crm.clients.models import Client, Tag
from crm.extensions import db
from crm.search.compiler import SearchContext, checkbox_states, day, needle, text_value
from crm.search.fields import Catalog, SearchField, ValueType, core_fields
from crm.search.tree import And, Condition, Node, Not, Op, Or, RelativeDate, Text
from crm.text import fold
from tests.conftest import make_field, make_user

# label, field type, choices; keys follow from the labels (crm.fields.services.make_key).
FIELDS = [
    ("Contract", "checkbox", []),
    ("Amount", "number", []),
    ("Birthday", "date", []),
    ("Miasto rodzinne", "text", []),
    ("Stage", "single_choice", ["lead", "client", "lost"]),
    ("Skills", "multi_choice", ["cut", "color", "nails"]),
    ("Code", "text", []),
]
CTX = SearchContext(today=date(2026, 3, 15), zone=ZoneInfo("Europe/Warsaw"), phone_region="PL")

CITIES = ["Łódź", "Lodz", "ŁÓDŹ", "Brno", "Köln", "Kraków", "Straße"]
FIRST = ["Anna", "Łucja", "Zoë", "Jan", "Ewa", "Jiří"]
LAST = ["Nowak", "Dvořák", "Müller", "Żak", "Wiśniewska", "Groß"]
COMPANIES = ["Salon Róża", "Kwiaty_100%", "Auto-Serwis", "Bäckerei"]
PHONES = ["+48601234567", "+420601123456", "+48221234567"]
COUNTRIES = ["PL", "DE", "CZ"]
TAGS = ["VIP", "vip-gold", "Łódź team", "new"]
OWNERS = [("anna@example.com", "Anna Nowak"), ("jurgen@example.com", "Jürgen Groß")]
AMOUNTS = [-5, 0, 10, 10.5, 100, 2.25]
BIRTHDAYS = [date(1980, 5, 17), date(1992, 2, 29), date(2001, 12, 31), date(2026, 3, 15)]
HOME = ["Łódź", "Kraków", "Brno", "Köln", "straße"]
CODES = ["alpha", "beta", "gamma", "delta"]
# Midnight in Warsaw is 23:00 UTC in winter: rows on both sides of local day boundaries.
BASE = datetime(2026, 2, 1, 23, 0, tzinfo=UTC)


def make_fields() -> None:
    for label, kind, choices in FIELDS:
        make_field(label, kind, choices=choices)


def populate(seed: int, count: int = 40) -> list[int]:
    """Random clients (and two owners, four tags); returns the owner ids."""
    rng = random.Random(seed)
    owners = [make_user(email, role="admin", name=name).id for email, name in OWNERS]
    tags = [Tag(name=name) for name in TAGS]
    db.session.add_all(tags)
    for n in range(count):
        custom: dict[str, Any] = {}
        if (r := rng.random()) < 0.7:
            custom["contract"] = 1 if r < 0.35 else 0
        if rng.random() < 0.7:
            custom["amount"] = rng.choice(AMOUNTS)
        if rng.random() < 0.6:
            custom["birthday"] = rng.choice(BIRTHDAYS).isoformat()
        if rng.random() < 0.6:
            custom["miasto_rodzinne"] = rng.choice(HOME)
        if rng.random() < 0.6:
            custom["stage"] = rng.choice(["lead", "client", "lost"])
        if rng.random() < 0.5:
            chosen = [c for c in ["cut", "color", "nails"] if rng.random() < 0.5]
            if chosen:
                custom["skills"] = chosen
        if rng.random() < 0.6:
            custom["code"] = rng.choice(CODES)
        client = Client(
            first_name=rng.choice([*FIRST, ""]),
            last_name=rng.choice(LAST),
            company=rng.choice([*COMPANIES, "", ""]),
            email=rng.choice(["", f"k{n}@example.com"]),
            phone=rng.choice([*PHONES, ""]),
            city=rng.choice([*CITIES, ""]),
            country=rng.choice([*COUNTRIES, ""]),
            owner_id=rng.choice([*owners, None]),
            custom=custom,
            created_at=BASE + timedelta(hours=rng.randrange(-40 * 24, 40 * 24, 7)),
            updated_at=BASE + timedelta(hours=rng.randrange(0, 60 * 24, 5)),
        )
        client.tags = [t for t in tags if rng.random() < 0.3]
        client.refresh_search_text()
        db.session.add(client)
    db.session.commit()
    return owners


# --- the oracle -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A client as plain Python data."""

    id: int
    core: dict[str, str]
    owner: tuple[str, str] | None
    tags: tuple[str, ...]
    created: datetime
    updated: datetime
    custom: dict[str, Any]
    search_text: str


def load_rows() -> list[Row]:
    rows = []
    for client in db.session.scalars(db.select(Client).order_by(Client.id)):
        core = {
            name: getattr(client, name)
            for name in (
                "first_name",
                "last_name",
                "company",
                "email",
                "phone",
                "street",
                "postal_code",
                "city",
                "country",
            )
        }
        owner = (client.owner.email, client.owner.full_name) if client.owner else None
        rows.append(
            Row(
                client.id,
                core,
                owner,
                tuple(t.name for t in client.tags),
                client.created_at,
                client.updated_at,
                dict(client.custom),
                client.search_text,
            )
        )
    return rows


COMPARE: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def _matches_value(stored: Any, cond: Condition, values: list[Any]) -> bool:
    if cond.op == Op.IN:
        return stored in values
    return COMPARE[cond.op](stored, values[0])


def _names(field: SearchField, cond: Condition, names: list[str]) -> bool:
    """Owner and tags: a set of folded names."""
    if cond.op == Op.EMPTY:
        return not names
    if cond.op == Op.NOT_EMPTY:
        return bool(names)
    if not names:
        return False
    if cond.op == Op.CONTAINS:
        return any(needle(field, cond.values[0]) in n for n in names)
    wanted = [fold(v) for v in cond.values]
    if cond.op == Op.NE:
        return wanted[0] not in names
    return any(w in names for w in wanted)


def evaluate(node: Node, row: Row, catalog: Catalog, ctx: SearchContext = CTX) -> bool:
    """The documented semantics, in plain Python."""
    if isinstance(node, Text):
        return fold(node.text) in row.search_text
    if isinstance(node, Not):
        return not evaluate(node.child, row, catalog, ctx)
    if isinstance(node, And):
        return all(evaluate(c, row, catalog, ctx) for c in node.children)
    if isinstance(node, Or):
        return any(evaluate(c, row, catalog, ctx) for c in node.children)
    field = catalog.get(node.field)
    assert field is not None
    op = node.op
    if field.kind == "owner":
        names = [fold(n) for n in row.owner] if row.owner else []
        return _names(field, node, names)
    if field.kind == "tags":
        return _names(field, node, [fold(t) for t in row.tags])
    if field.kind == "timestamp":
        stamp = row.created if field.column == "created_at" else row.updated
        local = stamp.astimezone(ctx.zone).date()
        return _matches_value(local, node, [day(v, ctx) for v in node.values])
    if field.kind == "core":
        stored = row.core[field.column]
        if op in (Op.EMPTY, Op.NOT_EMPTY):
            return (stored == "") == (op == Op.EMPTY)
        if stored == "":
            return False
        if op == Op.CONTAINS:
            return needle(field, node.values[0]) in fold(stored)
        return _matches_value(stored, node, [text_value(field, v, ctx) for v in node.values])
    stored = row.custom.get(field.column)
    if field.value_type == ValueType.CHECKBOX:
        return (1 if stored == 1 else 0) in checkbox_states(op, node.values)
    if op in (Op.EMPTY, Op.NOT_EMPTY):
        return (stored is None) == (op == Op.EMPTY)
    if stored is None:
        return False
    if field.value_type == ValueType.MULTI:
        if op == Op.NE:
            return node.values[0] not in stored
        return any(v in stored for v in node.values)
    if op == Op.CONTAINS:
        return needle(field, node.values[0]) in fold(stored)
    if field.value_type == ValueType.DATE:
        return _matches_value(stored, node, [day(v, ctx).isoformat() for v in node.values])
    if field.value_type == ValueType.NUMBER:
        return _matches_value(stored, node, list(node.values))
    return _matches_value(stored, node, [text_value(field, v, ctx) for v in node.values])


# --- a catalogue without a database -----------------------------------------------------


def static_catalog() -> Catalog:
    """The same fields Catalog.build() gives after make_fields(), without a database."""
    types = {
        "checkbox": ValueType.CHECKBOX,
        "number": ValueType.NUMBER,
        "date": ValueType.DATE,
        "text": ValueType.TEXT,
        "single_choice": ValueType.CHOICE,
        "multi_choice": ValueType.MULTI,
    }
    custom = []
    for label, kind, choices in FIELDS:
        key = "_".join(fold(label).split())
        custom.append(
            SearchField(
                ref=f"cf:{key}",
                label=label,
                value_type=types[kind],
                kind="custom",
                column=key,
                names=(key,),
                choices=tuple(choices),
                custom=True,
            )
        )
    return Catalog(core_fields() + custom)


# --- strategies -------------------------------------------------------------------------

ORDER_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE]
# Ordering comparisons only on ASCII text: other characters sort by the database's
# collation, which need not be Python's code point order.
TEXT_FIELDS = {
    "city": [*CITIES, "Warszawa"],
    "first_name": FIRST,
    "last_name": LAST,
    "company": COMPANIES,
    "email": ["k1@example.com", "k2@example.com"],
    "cf:miasto_rodzinne": [*HOME, "Gdańsk"],
}
ASCII_FIELDS = {"country": [*COUNTRIES, "AT"], "cf:code": [*CODES, "beta2", "a"]}
NEEDLES = ["lod", "ŁÓ", "o", "strasse", "ß", "100%", "_", "k1@", "ö", "dvorak", "a"]


def _in_or_one(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Op, Any]]:
    return st.one_of(
        st.tuples(st.just(Op.EQ), values),
        st.tuples(st.just(Op.NE), values),
        st.tuples(st.just(Op.IN), st.lists(values, min_size=1, max_size=3).map(tuple)),
    )


def _ordered(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Op, Any]]:
    return st.one_of(
        st.tuples(st.sampled_from(ORDER_OPS), values),
        st.tuples(st.just(Op.IN), st.lists(values, min_size=1, max_size=3).map(tuple)),
    )


def _empty() -> st.SearchStrategy[tuple[Op, Any]]:
    return st.tuples(st.sampled_from([Op.EMPTY, Op.NOT_EMPTY]), st.none())


def _contains() -> st.SearchStrategy[tuple[Op, Any]]:
    return st.tuples(st.just(Op.CONTAINS), st.sampled_from(NEEDLES))


DAYS = st.one_of(
    st.sampled_from([*BIRTHDAYS, date(2026, 2, 1), date(2026, 2, 2), date(1, 1, 1), date.max]),
    st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 5, 1)),
    st.integers(-120, 60).map(RelativeDate),
)


def _field_condition(ref: str, spec: st.SearchStrategy[tuple[Op, Any]]) -> st.SearchStrategy[Node]:
    return spec.map(lambda pair: Condition(ref, pair[0], pair[1]))


def condition_strategy() -> st.SearchStrategy[Node]:
    options = []
    for ref, pool in TEXT_FIELDS.items():
        values = st.sampled_from(pool)
        options.append(_field_condition(ref, st.one_of(_in_or_one(values), _contains(), _empty())))
    for ref, pool in ASCII_FIELDS.items():
        values = st.sampled_from(pool)
        options.append(_field_condition(ref, st.one_of(_ordered(values), _contains(), _empty())))
    phones = st.sampled_from([*PHONES, "601 234 567", "+48 22 123 45 67", "12"])
    options.append(_field_condition("phone", st.one_of(_in_or_one(phones), _empty())))
    options.append(
        _field_condition(
            "phone", st.tuples(st.just(Op.CONTAINS), st.sampled_from(["601 234", "+420"]))
        )
    )
    checkbox = st.sampled_from([True, False, 0, 1])
    # Twice: "missing is no" is the rule people rely on most ("Contract" < 1).
    options += [_field_condition("cf:contract", _ordered(checkbox))] * 2
    numbers = st.sampled_from([*AMOUNTS, 3, 10.25, -100])
    options.append(_field_condition("cf:amount", st.one_of(_ordered(numbers), _empty())))
    options.append(_field_condition("cf:birthday", st.one_of(_ordered(DAYS), _empty())))
    for ref in ("created", "updated"):
        options.append(_field_condition(ref, _ordered(DAYS)))
    stages = st.sampled_from(["lead", "client", "lost"])
    options.append(
        _field_condition("cf:stage", st.one_of(_in_or_one(stages), _contains(), _empty()))
    )
    skills = st.sampled_from(["cut", "color", "nails"])
    options.append(_field_condition("cf:skills", st.one_of(_in_or_one(skills), _empty())))
    tags = st.sampled_from([*TAGS, "vip", "ŁÓDŹ TEAM", "nope"])
    options.append(_field_condition("tags", st.one_of(_in_or_one(tags), _contains(), _empty())))
    owners = st.sampled_from(["anna@example.com", "ANNA NOWAK", "jurgen gross", "nobody"])
    options.append(_field_condition("owner", st.one_of(_in_or_one(owners), _contains(), _empty())))
    options.append(st.sampled_from([*NEEDLES, "Nowak", "+48601", "anna nowak"]).map(Text))
    # Pick the field uniformly (one_of leans towards its first branches).
    return st.sampled_from(options).flatmap(lambda leaf: leaf)


def trees(leaves: st.SearchStrategy[Node], max_leaves: int = 6) -> st.SearchStrategy[Node]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda c: And(tuple(c))),
            st.lists(children, min_size=2, max_size=3).map(lambda c: Or(tuple(c))),
            children.map(Not),
        ),
        max_leaves=max_leaves,
    )


# Arbitrary syntax: any names and values the language can carry.
SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x00"), max_size=12
)
SCALARS = st.one_of(
    SAFE_TEXT,
    st.booleans(),
    st.integers(-(10**15) + 1, 10**15 - 1),
    st.integers(-(10**9), 10**9).map(lambda n: n / 100),
    st.integers(-(10**6), 10**6).map(lambda n: n / 7),
    st.dates(),
    st.integers(-36500, 36500).map(RelativeDate),
)


def _syntax_condition() -> st.SearchStrategy[Node]:
    names = SAFE_TEXT.filter(bool)
    single = st.tuples(names, st.sampled_from([*ORDER_OPS, Op.CONTAINS]), SCALARS)
    listed = st.tuples(names, st.just(Op.IN), st.lists(SCALARS, min_size=1, max_size=4).map(tuple))
    empty = st.tuples(names, st.sampled_from([Op.EMPTY, Op.NOT_EMPTY]), st.none())
    return st.one_of(single, listed, empty).map(lambda t: Condition(t[0], t[1], t[2]))


SYNTAX_TREES = trees(st.one_of(_syntax_condition(), SAFE_TEXT.map(Text)))
