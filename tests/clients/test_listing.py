"""Keyset pagination: walking the pages forward (and back) shows every client exactly
once, in the order a full sort gives, for core and custom sorts, with empty values."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from crm.auth.models import User
from crm.clients import listing
from crm.clients.models import Client
from crm.extensions import db
from crm.fields.services import active_fields
from tests.conftest import make_field, make_user

SORTS = ["name", "email", "city", "created", "cf:wartosc", "cf:umowa", "cf:miasto_rodzinne"]


@pytest.fixture
def population(app):  # type: ignore[no-untyped-def]
    with app.test_request_context():
        user = make_user("lister@example.com")
        make_field("Wartość", "number")
        make_field("Umowa", "checkbox")
        make_field("Miasto rodzinne", "text")
        rng = random.Random(3)
        base = datetime(2026, 1, 1, tzinfo=UTC)
        for n in range(47):
            custom = {}
            if rng.random() < 0.7:
                custom["wartosc"] = rng.choice([5, 10, 10.5, 100, 2.25])  # many ties
            if rng.random() < 0.6:
                custom["umowa"] = rng.choice([0, 1])
            if rng.random() < 0.5:
                custom["miasto_rodzinne"] = rng.choice(["Łódź", "Kraków", "Brno", "Köln"])
            client = Client(
                first_name=rng.choice(["Anna", "Jan", "Ewa"]),
                last_name=rng.choice(["Nowak", "Dvořák", "Müller", "Żak"]),
                email=rng.choice(["", f"k{n}@example.com"]),
                city=rng.choice(["", "Łódź", "Brno"]),
                custom=custom,
                created_at=base + timedelta(hours=rng.randrange(5)),
            )
            client.refresh_search_text()
            db.session.add(client)
        db.session.commit()
        return user.id


def _expected_order(sort: str, desc: bool) -> list[int]:
    """A plain-Python sort: empty custom values are the smallest; ties broken by id."""
    clients = list(db.session.scalars(db.select(Client)))

    def key(c: Client):  # type: ignore[no-untyped-def]
        if sort.startswith("cf:"):
            value = c.custom.get(sort[3:])
            return ((value is not None), value if value is not None else 0, c.id)
        attrs = listing.CORE_SORTS[sort]
        return (*(getattr(c, a) for a in attrs), c.id)

    return [c.id for c in sorted(clients, key=key, reverse=desc)]


def _walk(user: User, sort: str, desc: bool, per_page: int) -> tuple[list[int], list[int]]:
    fields = active_fields()
    forward: list[int] = []
    pages: list[listing.ListResult] = []
    after = None
    while True:
        result = listing.list_clients(
            user,
            listing.ListRequest(sort=sort, desc=desc, after=after, per_page=per_page),
            fields,
            [],
        )
        pages.append(result)
        forward.extend(c.id for c in result.clients)
        if not result.next_cursor:
            break
        after = result.next_cursor
        assert len(pages) < 100, "pagination does not terminate"
    backward: list[int] = []
    before = pages[-1].prev_cursor
    backward = [c.id for c in pages[-1].clients]
    while before:
        result = listing.list_clients(
            user,
            listing.ListRequest(sort=sort, desc=desc, before=before, per_page=per_page),
            fields,
            [],
        )
        backward = [c.id for c in result.clients] + backward
        before = result.prev_cursor
    return forward, backward


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("desc", [False, True])
def test_every_row_exactly_once_in_sorted_order(app, population, sort, desc):
    with app.test_request_context():
        user = db.session.get(User, population)
        expected = _expected_order(sort, desc)
        forward, backward = _walk(user, sort, desc, per_page=7)
    assert len(forward) == 47
    if sort.startswith("cf:") and sort != "cf:miasto_rodzinne":
        assert forward == expected
    else:
        # Text collation differs between databases; check completeness and uniqueness.
        assert sorted(forward) == sorted(expected)
    assert backward == forward


def test_last_page_link_pages_backwards_from_the_end(app, population):
    with app.test_request_context():
        user = db.session.get(User, population)
        fields = active_fields()
        last = listing.list_clients(
            user, listing.ListRequest(sort="cf:wartosc", before="", per_page=10), fields, []
        )
        expected = _expected_order("cf:wartosc", False)
        assert [c.id for c in last.clients] == expected[-10:]
        assert last.next_cursor is None and last.prev_cursor


def test_malformed_cursor_gives_the_first_page(admin_client, app, population):
    for junk in ["%%%", "bnVsbA", "W10", "WzEsMiwzLDRd", "eyJhIjoxfQ"]:
        response = admin_client.get("/clients/", query_string={"after": junk, "sort": "cf:wartosc"})
        assert response.status_code == 200


def test_unknown_sort_falls_back_to_name(admin_client, population):
    response = admin_client.get("/clients/", query_string={"sort": "password_hash; drop"})
    assert response.status_code == 200
    assert 'aria-sort="ascending"' in response.get_data(as_text=True)


def test_rows_link_to_their_cards(admin_client, app, population):
    from flask import url_for

    body = admin_client.get("/clients/").get_data(as_text=True)
    with app.test_request_context():
        first = db.session.scalars(
            db.select(Client).order_by(Client.last_name, Client.first_name, Client.id)
        ).first()
        href = url_for("clients.card", client_id=first.id)
    assert f'<a href="{href}"><strong>' in body
    assert admin_client.get(href).status_code == 200


def test_count_is_capped(app, population, monkeypatch):
    monkeypatch.setattr(listing, "COUNT_CAP", 10)
    with app.test_request_context():
        user = db.session.get(User, population)
        result = listing.list_clients(user, listing.ListRequest(), active_fields(), [])
    assert result.count_capped and result.count == 10


def test_broad_search_sorted_by_a_field_whose_index_is_missing_still_works(app, population):
    """The SQLite sort-index hint must not name an index that is not there."""
    from crm.fields import indexes

    with app.test_request_context():
        user = db.session.get(User, population)
        indexes.drop_index("wartosc")
        result = listing.list_clients(
            user, listing.ListRequest(q="a", sort="cf:wartosc", per_page=5), active_fields(), []
        )
    assert len(result.clients) == 5


def test_broad_filter_on_sqlite_walks_the_sort_index(app, population):
    """SQLite would read every match through the filter's index and sort them; for a
    broad filter the list names the sort index instead (see docs/DESIGN.md)."""
    import sqlalchemy as sa

    statements: list[str] = []

    def capture(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    with app.test_request_context():
        user = db.session.get(User, population)
        engine = db.session.get_bind()
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            listing.list_clients(
                user, listing.ListRequest(q="a", sort="cf:wartosc", per_page=5), active_fields(), []
            )
            page_queries = [s for s in statements if "FROM clients" in s and "ORDER BY" in s]
            assert page_queries
            if engine.dialect.name == "sqlite":
                assert all("FROM clients INDEXED BY ix_cf_wartosc" in s for s in page_queries)
            else:  # PostgreSQL plans by statistics; no hint is sent
                assert not any("INDEXED BY" in s for s in page_queries)
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)


def test_postgresql_counts_after_the_page_sqlite_with_it(admin_client, app, population):
    """PostgreSQL: more than one page of matches leaves the count to a second request
    (cap=list), which answers as the list would; a first page holding every match is
    counted from its rows. SQLite counts before the page (its plan depends on it)."""
    with app.test_request_context():
        user = db.session.get(User, population)
        postgres = db.engine.dialect.name == "postgresql"
        paged = listing.list_clients(user, listing.ListRequest(per_page=10), active_fields(), [])
        whole = listing.list_clients(user, listing.ListRequest(), active_fields(), [])
    assert whole.count == 47 and not whole.count_capped
    assert paged.count == (None if postgres else 47)
    body = admin_client.get("/clients/").get_data(as_text=True)
    assert "47 clients" in body  # one page of 50 holds them all, on both databases
    count = admin_client.get("/clients/count", query_string={"cap": "list"})
    assert count.status_code == 200 and "47 clients" in count.get_data(as_text=True)


def test_the_deferred_count_says_more_than_the_cap(admin_client, population, monkeypatch):
    monkeypatch.setattr(listing, "COUNT_CAP", 10)
    body = admin_client.get("/clients/count", query_string={"cap": "list"}).get_data(as_text=True)
    assert "More than 10 clients" in body and "count all" in body
