"""The query language in the client list (`/clients/?q=`): filtering, counts, errors
shown above the list, injection payloads, and the user's scope."""

from __future__ import annotations

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from crm.auth.models import Team, User
from crm.clients.models import Client
from crm.extensions import db
from crm.search.parser import parse
from crm.search.services import client_condition
from tests.conftest import login, make_client, make_field, make_user
from tests.search.support import CTX

VALID = '"Contract" < 1 AND city = "Łódź"'


@pytest.fixture
def clients(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        make_field("Contract", "checkbox")
        make_client(first_name="Zofia", last_name="Wiśniewska", city="Łódź", custom={"contract": 0})
        make_client(first_name="Marek", last_name="Żuraw", city="Łódź", email="marek@example.com")
        make_client(first_name="Jan", last_name="Nowak", city="Łódź", custom={"contract": 1})
        make_client(first_name="Ewa", last_name="Dvořák", city="Brno", custom={})


def _get(http, q: str, **headers: str) -> str:  # type: ignore[no-untyped-def]
    response = http.get("/clients/", query_string={"q": q}, headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_a_query_filters_the_rows_and_the_count(admin_client, clients):
    body = _get(admin_client, VALID)
    assert "Wiśniewska" in body and "Żuraw" in body  # 0, and no value at all
    assert "Nowak" not in body and "Dvořák" not in body
    assert "2 clients" in body
    assert f'value="{escape(VALID)}"' in body  # the query stays in the box
    partial = _get(admin_client, VALID, **{"HX-Request": "true"})
    assert "Wiśniewska" in partial and "Nowak" not in partial and "<html" not in partial
    count = admin_client.get("/clients/count", query_string={"q": VALID})
    assert count.status_code == 200 and "2 clients" in count.get_data(as_text=True)


def test_count_all_stops_at_the_cap(admin_client, clients, monkeypatch):
    from crm.clients import listing

    monkeypatch.setattr(listing, "EXACT_COUNT_CAP", 2)
    capped = admin_client.get("/clients/count", query_string={"q": 'city = "Łódź"'})
    assert capped.status_code == 200
    assert "more than 2 clients" in capped.get_data(as_text=True)  # 3 match
    exact = admin_client.get("/clients/count", query_string={"q": VALID})
    assert "2 clients" in exact.get_data(as_text=True)  # at the cap: exact
    assert "more than" not in exact.get_data(as_text=True)


def test_diacritics_in_values_and_folding(admin_client, clients):
    body = _get(admin_client, 'city = "Łódź"')
    assert "3 clients" in body and "Dvořák" not in body
    assert "3 clients" in _get(admin_client, 'city ~ "LODZ"')
    assert "No client matches" in _get(admin_client, 'city = "Lodz"')  # = is exact


def test_plain_words_are_still_the_quick_search(admin_client, clients):
    for query in ("Wiśniewska", "wisniewska", "WIŚNIEWSKA", "zofia wis", "marek@ex"):
        body = _get(admin_client, query)
        assert "1 client" in body, query
    assert "1 client" in _get(admin_client, 'zuraw city = "Łódź"')


@pytest.mark.parametrize(
    ("query", "message", "character"),
    [
        ('city = "Łódź', "The quoted text is not closed", 8),
        ('"Contrakt" < 1', "did you mean “Contract”", 1),
        ('"Contract" = "maybe"', "“Contract” is a checkbox: compare it with yes/no or 0/1.", 14),
        ("city = Łódź AND", "put text in double quotes", 8),
        ("(a OR b", "Expected ) to close the (", 8),
    ],
)
def test_a_bad_query_shows_the_error_and_position_above_the_list(
    admin_client, clients, query, message, character
):
    for headers in ({}, {"HX-Request": "true"}):
        body = _get(admin_client, query, **headers)
        assert str(escape(message)) in body
        assert f"At character {character}:" in body
        assert "No client matches" not in body and "Wiśniewska" not in body
    assert f'value="{escape(query)}"' in _get(admin_client, query)
    count = admin_client.get("/clients/count", query_string={"q": query})
    assert count.status_code == 200 and str(escape(message)) in count.get_data(as_text=True)


def test_an_overlong_query_is_an_error_not_a_cut_query(admin_client, clients):
    body = _get(admin_client, "Nowak " * 400)
    assert "The query is too long" in body and "Nowak</strong>" not in body


PAYLOADS = [
    'city = "x\' OR 1=1 --"',
    '"; DROP TABLE clients; --',
    "'; DROP TABLE clients; --",
    "x' OR '1'='1",
    'city = "Łódź" OR 1=1',
    'city = "a\\" OR 1=1 --"',
    '") OR 1=1 --',
    "%",
    "_",
    "%' --",
    'email ~ "%"',
    'email ~ "_"',
    "city IN (\"a') OR ('1'='1\")",
    "cf:x'); DROP TABLE clients; -- = 1",
    "1; SELECT * FROM users",
    '"Contract" = 1 UNION SELECT password_hash FROM users',
    'city = "\\\\" OR "" = ""',
    "city = 'Brno'",
    'owner ~ "%"',
    'tags = "\' OR 1=1"',
]


def test_sql_injection_payloads_change_nothing_and_leak_nothing(admin_client, app):
    with app.app_context():
        make_field("Contract", "checkbox")
        make_client(first_name="Ala", last_name="Kot", city="Gdańsk", email="ala@example.com")
        make_client(first_name="Ola", last_name="Pies", city="Brno", email="ola@example.com")
        before = db.session.scalar(select(func.count()).select_from(Client))
    for payload in PAYLOADS:
        body = _get(admin_client, payload)
        assert "Kot" not in body and "Pies" not in body, payload
        assert "$argon2" not in body, payload
        count = admin_client.get("/clients/count", query_string={"q": payload})
        assert count.status_code == 200
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == before
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
    # The list still works afterwards.
    assert "2 clients" in _get(admin_client, "")


def test_a_sales_users_query_never_reaches_another_teams_clients(client, app):
    with app.app_context():
        north, south = Team(name="Północ"), Team(name="Południe")
        db.session.add_all([north, south])
        db.session.flush()
        mine = make_user("anna@example.com", role="sales", name="Anna")
        theirs = make_user("piotr@example.com", role="sales", name="Piotr")
        mine.team_id, theirs.team_id = north.id, south.id
        db.session.commit()
        make_client(last_name="Mój", city="Łódź", owner_id=mine.id)
        make_client(last_name="Cudzy", city="Łódź", owner_id=theirs.id)
        make_client(last_name="Niczyj", city="Łódź", owner_id=None)
    login(client, "anna@example.com")
    queries = [
        'city = "Łódź"',
        'owner = "piotr@example.com"',
        "owner IS EMPTY",
        "Cudzy",
        "Cudzy OR Mój OR NOT Mój",
        'NOT city = "nothing" OR owner IS NOT EMPTY',
        "tags IS EMPTY OR tags IS NOT EMPTY",
    ]
    for query in queries:
        body = _get(client, query)
        # Rows show the name in <strong> (the query itself is echoed in the box).
        assert "<strong>Zofia Cudzy</strong>" not in body, query
        assert "<strong>Zofia Niczyj</strong>" not in body, query
        count = client.get("/clients/count", query_string={"q": query}).get_data(as_text=True)
        assert "2 clients" not in count and "3 clients" not in count, query
    own = _get(client, 'city = "Łódź"')
    assert "1 client" in own and "<strong>Zofia Mój</strong>" in own
    with app.test_request_context():
        anna = db.session.scalar(select(User).where(User.email == "anna@example.com"))
        for query in queries:
            condition = client_condition(anna, parse(query), ctx=CTX)
            assert set(db.session.scalars(select(Client.last_name).where(condition))) <= {"Mój"}
