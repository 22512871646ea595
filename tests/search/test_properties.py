"""Property tests (hypothesis): printing round-trips, no input escapes as anything but
QueryError, and the compiled SQL agrees with a plain-Python evaluation on random data,
on SQLite and (with CRM_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from crm.auth.models import User
from crm.clients import listing
from crm.clients.models import Client
from crm.extensions import db
from crm.search.compiler import compile_tree
from crm.search.errors import QueryError
from crm.search.fields import Catalog, resolve
from crm.search.parser import parse
from crm.search.printer import to_text
from crm.search.services import client_condition
from crm.search.tree import (
    And,
    Condition,
    Not,
    Op,
    Or,
    RelativeDate,
    Text,
    conditions,
    from_dict,
    to_dict,
)
from tests.search.support import (
    CTX,
    SYNTAX_TREES,
    condition_strategy,
    evaluate,
    load_rows,
    make_fields,
    populate,
    static_catalog,
    trees,
)

DB_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
RESOLVED_TREES = trees(condition_strategy())


def _depth(node) -> int:  # type: ignore[no-untyped-def]
    if isinstance(node, Not):
        return 1 + _depth(node.child)
    if isinstance(node, And | Or):
        return 1 + max(_depth(c) for c in node.children)
    return 0


@settings(max_examples=300, deadline=None)
@given(SYNTAX_TREES)
def test_parse_of_print_is_the_same_tree(tree):
    assume(_depth(tree) < 20)
    text = to_text(tree)
    again = parse(text)
    assert again == tree, text
    # == cannot tell yes from 1 (True == 1 in Python); the stored form can.
    assert to_dict(again) == to_dict(tree)
    assert json.dumps(to_dict(again), sort_keys=True) == json.dumps(to_dict(tree), sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(SYNTAX_TREES)
def test_dict_form_round_trips_through_json(tree):
    assume(_depth(tree) < 20)
    data = json.loads(json.dumps(to_dict(tree)))
    assert from_dict(data) == tree
    assert to_dict(from_dict(data)) == to_dict(tree)


@settings(max_examples=200, deadline=None)
@given(RESOLVED_TREES)
def test_resolved_trees_print_with_labels_and_resolve_back(tree):
    catalog = static_catalog()
    for text in (to_text(tree, catalog), to_text(tree)):
        again = resolve(parse(text), catalog)
        assert again == tree, text
        assert to_dict(again) == to_dict(tree)


QUERY_BITS = st.sampled_from(
    [
        "(",
        ")",
        '"',
        "AND",
        "or",
        "NOT",
        "IN",
        "IS",
        "EMPTY",
        "=",
        "!=",
        "<",
        ">=",
        "~",
        ",",
        "city",
        '"Contract"',
        "Amount",
        "cf:",
        "cf:stage",
        "tags",
        "owner",
        "created",
        "1,5",
        "-30d",
        "+99999999d",
        "2026-02-30",
        "2026-01-31",
        "0001-01-01",
        "9999-12-31",
        "yes",
        "today",
        "'",
        ";",
        "--",
        "/*",
        "DROP TABLE clients",
        "\\",
        "\x00",
        "\ud800",
        "%",
        "_",
        "Łódź",
        "„x”",
        "1e999",
        "99999999999999999999",
    ]
)
HOSTILE = st.one_of(
    st.text(max_size=80),
    st.lists(QUERY_BITS, max_size=12).map(" ".join),
    st.lists(QUERY_BITS, max_size=12).map("".join),
)


@settings(max_examples=500, deadline=None)
@given(HOSTILE)
def test_any_text_either_parses_or_raises_query_error(text):
    catalog = static_catalog()
    try:
        node = parse(text)
        if node is not None:
            resolve(node, catalog)
    except QueryError as error:
        assert error.position is None or 0 <= error.position <= len(text)
        assert error.message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["and", "or", "not", "text", "field", "op", "value", "date", "days", "x"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_stored_data_either_loads_or_raises_query_error(data):
    try:
        from_dict(data)
    except QueryError as error:
        assert error.position is None


@pytest.fixture
def population(app):  # type: ignore[no-untyped-def]
    """The random clients as plain rows, and the catalogue (both plain data)."""
    with app.test_request_context():
        make_fields()
        populate(seed=11)
        return load_rows(), Catalog.build()


@DB_SETTINGS
@given(tree=RESOLVED_TREES)
# The documented rules, checked on every run whatever hypothesis draws.
@example(tree=Condition("cf:contract", Op.LT, 1))
@example(tree=Condition("cf:contract", Op.EQ, False))
@example(tree=Condition("cf:contract", Op.NE, True))
@example(tree=Not(Condition("cf:amount", Op.NE, 10)))
@example(tree=Condition("cf:amount", Op.LT, 10))
@example(tree=Condition("city", Op.NE, "Łódź"))
@example(tree=Condition("city", Op.CONTAINS, "lod"))
@example(tree=Condition("cf:skills", Op.NE, "cut"))
@example(tree=Condition("tags", Op.NE, "VIP"))
@example(tree=Condition("owner", Op.NE, "anna@example.com"))
@example(tree=Condition("created", Op.EQ, date(2026, 2, 2)))
@example(tree=Condition("updated", Op.LE, RelativeDate(-30)))
def test_compiled_sql_agrees_with_python(app, population, tree):
    rows, catalog = population

    def check(node) -> list[int]:  # type: ignore[no-untyped-def]
        expected = sorted(r.id for r in rows if evaluate(node, r, catalog))
        found = sorted(
            db.session.scalars(select(Client.id).where(compile_tree(node, catalog, CTX)))
        )
        assert found == expected, to_text(node, catalog)
        return found

    with app.test_request_context():
        # Each leaf on its own too: AND/OR can hide a wrong leaf in the whole tree.
        for leaf in {*conditions(tree), *_texts(tree)}:
            check(leaf)
        found = check(tree)
        share = "none" if not found else "all" if len(found) == len(rows) else "some"
        event(f"rows matched: {share}")
        # NOT is the complement: no row is lost to SQL's unknown (NULL).
        negated = check(Not(tree))
        assert sorted(found + negated) == [r.id for r in rows]


def _texts(node) -> list[Text]:  # type: ignore[no-untyped-def]
    if isinstance(node, Text):
        return [node]
    if isinstance(node, Not):
        return _texts(node.child)
    if isinstance(node, And | Or):
        return [t for c in node.children for t in _texts(c)]
    return []


@DB_SETTINGS
@given(text=HOSTILE)
def test_hostile_text_through_the_whole_list_path(app, population, text):
    """From text to executed SQL: a result or a QueryError, nothing else."""
    with app.test_request_context():
        user = db.session.scalar(select(User).where(User.email == "anna@example.com"))
        total = db.session.scalar(select(db.func.count(Client.id)))
        try:
            node = parse(text)
            condition = client_condition(user, node, ctx=CTX)
        except QueryError:
            return
        found = db.session.scalars(select(Client.id).where(condition)).all()
        assert len(found) <= total
        listing.list_clients(user, listing.ListRequest(), [], [], where=condition)
