"""What reaches the database: bound parameters only, and conditions spelled so the
custom field's expression index (and the core column's index) can serve them."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from crm.clients.models import Client
from crm.extensions import db
from crm.fields import indexes
from crm.search.compiler import FOLD_FROM, compile_tree, fold_sql
from crm.search.fields import Catalog
from crm.search.services import parse_query
from crm.text import fold
from tests.conftest import make_client, make_field
from tests.search.support import CTX


def _sql(query: str):  # type: ignore[no-untyped-def]
    catalog = Catalog.build()
    stmt = select(Client.id).where(compile_tree(parse_query(query, catalog), catalog, CTX))
    return stmt, stmt.compile(db.session.get_bind())


def test_values_travel_only_as_bound_parameters(app):
    with app.test_request_context():
        make_field("Notatka", "text")
        hostile = "x' OR 1=1; DROP TABLE clients; --"
        for query in (
            f'city = "{hostile}"',
            f'Notatka ~ "{hostile}"',
            f'tags IN ("{hostile}")',
            f'owner != "{hostile}"',
            f'"{hostile}"',
        ):
            stmt, compiled = _sql(query)
            assert "1=1" not in str(compiled), query
            # As typed, or folded for ~, tags and owner: a parameter either way.
            values = [str(v) for v in compiled.params.values()]
            assert any(hostile in v or fold(hostile) in v for v in values), query
            db.session.execute(stmt).all()


def test_custom_and_core_conditions_use_their_indexes(app):
    with app.test_request_context():
        make_field("Amount", "number")
        for n in range(30):
            make_client(last_name=f"K{n}", city="Łódź" if n % 3 else "Brno", custom={"amount": n})
        dialect = indexes.dialect_name()
        if dialect == "postgresql":
            # A table this small is read whole unless sequential scans are made dear.
            db.session.execute(text("SET LOCAL enable_seqscan = off"))
        for query, index in (
            ('"Amount" < 10', "ix_cf_amount"),
            ('"Amount" = 12', "ix_cf_amount"),
            ('"Amount" >= 12,5', "ix_cf_amount"),
            ('city = "Łódź"', "ix_clients_city_order"),
        ):
            stmt, _compiled = _sql(query)
            plan = _plan(stmt)
            assert index in plan, (query, plan)


def _plan(stmt) -> str:  # type: ignore[no-untyped-def]
    """The database's plan for a statement, run as the driver would run it (the
    parameters passed through their types' bind processors, e.g. JSONB)."""
    connection = db.session.connection()
    dialect = connection.dialect
    compiled = stmt.compile(connection)
    params = {}
    for key, value in compiled.params.items():
        process = compiled.binds[key].type.dialect_impl(dialect).bind_processor(dialect)
        params[key] = process(value) if process else value
    if dialect.name == "sqlite":
        sql = "EXPLAIN QUERY PLAN " + str(compiled)
        rows = connection.exec_driver_sql(sql, tuple(params[k] for k in compiled.positiontup))
    else:
        rows = connection.exec_driver_sql("EXPLAIN " + str(compiled), params)
    return " ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("word", ["Łódź", "MÜLLER", "Dvořák", "Straße", "Œuvre", "ǅemal"])
def test_sql_folding_agrees_with_python(app, word):
    """The PostgreSQL translate() table and SQLite's registered function both give
    crm.text.fold's answer."""
    with app.test_request_context():
        folded = db.session.scalar(select(fold_sql(db.literal(word))))
        assert folded == fold(word)


def test_fold_table_covers_the_letters_people_type():
    for ch in "ĄĆĘŁŃÓŚŹŻÄÖÜČŘŠŽÝÁÍÉĚŮŤĎŇ":
        assert ch in FOLD_FROM
