"""The documented semantics, example by example, on every database backend: strict <,
missing checkbox = no, empties only for IS EMPTY, folding for ~, names by label or key,
type errors, and stored trees surviving a renamed or archived field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from crm.clients.models import Client, Tag
from crm.extensions import db
from crm.fields.models import CustomField
from crm.fields.services import FieldSpec, archive_field, update_field
from crm.search.compiler import SearchContext, compile_tree
from crm.search.errors import QueryError
from crm.search.fields import Catalog, field_problems
from crm.search.services import client_condition, parse_query, query_condition, query_text
from crm.search.tree import from_dict, to_dict
from tests.conftest import make_client, make_field, make_user
from tests.search.support import CTX


@pytest.fixture
def people(app):  # type: ignore[no-untyped-def]
    """Four clients, named by last name in the assertions."""
    with app.test_request_context():
        owner = make_user("ola@example.com", role="admin", name="Ola Żmuda")
        make_field("Contract", "checkbox")
        make_field("Amount", "number")
        make_field("Birthday", "date")
        make_field("Miasto rodzinne", "text")
        make_field("Stage", "single_choice", choices=["lead", "client"])
        make_field("Skills", "multi_choice", choices=["cut", "color"])
        vip = Tag(name="VIP")
        zofia = make_client(
            first_name="Zofia",
            last_name="Wiśniewska",
            city="Łódź",
            owner_id=owner.id,
            custom={"contract": 1, "amount": 1250.5, "miasto_rodzinne": "Łódź", "skills": ["cut"]},
            created_at=datetime(2026, 3, 1, 10, tzinfo=UTC),
        )
        zofia.tags.append(vip)
        make_client(
            first_name="Jan",
            last_name="Nowak",
            city="Lodz",
            custom={"contract": 0, "amount": 10, "skills": ["cut", "color"]},
            created_at=datetime(2026, 2, 28, 23, 30, tzinfo=UTC),  # 1 March in Warsaw
        )
        make_client(
            first_name="Ewa",
            last_name="Dvořák",
            city="",
            custom={},
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        make_client(
            first_name="Łucja",
            last_name="Müller",
            city="Brno",
            custom={"amount": 0, "birthday": "1990-05-17", "stage": "lead"},
            created_at=datetime(2026, 3, 14, 12, tzinfo=UTC),
        )
        db.session.commit()


def names(query: str, ctx: SearchContext = CTX) -> set[str]:
    condition = query_condition(query, ctx=ctx)
    stmt = select(Client.last_name)
    if condition is not None:
        stmt = stmt.where(condition)
    return set(db.session.scalars(stmt))


EVERYONE = {"Wiśniewska", "Nowak", "Dvořák", "Müller"}


SEMANTICS = [
    # An unticked or missing checkbox is 0 and no.
    ('"Contract" < 1', {"Nowak", "Dvořák", "Müller"}),
    ('"Contract" = false', {"Nowak", "Dvořák", "Müller"}),
    ("contract = no", {"Nowak", "Dvořák", "Müller"}),
    ("Contract = 0", {"Nowak", "Dvořák", "Müller"}),
    ('"Contract" = yes', {"Wiśniewska"}),
    ('"Contract" >= 1', {"Wiśniewska"}),
    ('"Contract" != yes', {"Nowak", "Dvořák", "Müller"}),
    ('"Contract" IN (yes, no)', EVERYONE),
    ('"Contract" > 1', set()),
    # < is strict; an empty value never matches a comparison, != included.
    ('"Amount" < 10', {"Müller"}),
    ('"Amount" <= 10', {"Nowak", "Müller"}),
    ('"Amount" >= 12,5', {"Wiśniewska"}),
    ('"Amount" = 1250.5', {"Wiśniewska"}),
    ('"Amount" = 1250,50', {"Wiśniewska"}),
    ('"Amount" != 10', {"Wiśniewska", "Müller"}),
    ('"Amount" IN (0, 10)', {"Nowak", "Müller"}),
    ('"Amount" IS EMPTY', {"Dvořák"}),
    ('"Amount" IS NOT EMPTY', {"Wiśniewska", "Nowak", "Müller"}),
    ('NOT "Amount" = 10', {"Wiśniewska", "Dvořák", "Müller"}),
    # Core text: exact =, folding ~, '' is empty.
    ('city = "Łódź"', {"Wiśniewska"}),
    ('city ~ "lodz"', {"Wiśniewska", "Nowak"}),
    ('city ~ "ŁÓDŹ"', {"Wiśniewska", "Nowak"}),
    ('city != "Łódź"', {"Nowak", "Müller"}),
    ('city < "C"', {"Müller"}),
    ("city IS EMPTY", {"Dvořák"}),
    ('NOT city = "Łódź"', {"Nowak", "Dvořák", "Müller"}),
    # Custom fields by label (quoted), by key, or by cf:key.
    ('"Miasto rodzinne" = "Łódź"', {"Wiśniewska"}),
    ('miasto_rodzinne ~ "LODZ"', {"Wiśniewska"}),
    ('"miasto rodzinne" != "Kraków"', {"Wiśniewska"}),
    ("cf:miasto_rodzinne IS EMPTY", {"Nowak", "Dvořák", "Müller"}),
    ('Stage = "lead"', {"Müller"}),
    ('Stage != "lead"', set()),
    ('Skills = "color"', {"Nowak"}),
    ('Skills != "color"', {"Wiśniewska"}),
    ('Skills IN ("cut", "color")', {"Wiśniewska", "Nowak"}),
    ("Skills IS EMPTY", {"Dvořák", "Müller"}),
    # Dates: custom dates as days, created as days in the organisation's zone.
    ("Birthday < 1990-05-18", {"Müller"}),
    ("Birthday > 1990-05-17", set()),
    ("created = 2026-03-01", {"Wiśniewska", "Nowak"}),
    ("created < 2026-03-01", {"Dvořák"}),
    ("created > -30d", {"Wiśniewska", "Nowak", "Müller"}),
    ("created >= today", set()),
    ("created = -1d", {"Müller"}),
    # Tags and owner: names ignoring case and accents.
    ('tags = "vip"', {"Wiśniewska"}),
    ("tags IS EMPTY", {"Nowak", "Dvořák", "Müller"}),
    ('tags != "vip"', set()),
    ('owner = "OLA ZMUDA"', {"Wiśniewska"}),
    ('owner ~ "ola@"', {"Wiśniewska"}),
    ("owner IS EMPTY", {"Nowak", "Dvořák", "Müller"}),
    # Free text is the quick search; bare words AND with conditions.
    ("Wiśniewska", {"Wiśniewska"}),
    ("wisniewska", {"Wiśniewska"}),
    ("dvorak", {"Dvořák"}),
    ('nowak city ~ "lodz"', {"Nowak"}),
    ("Nowak OR Müller", {"Nowak", "Müller"}),
    ("%", set()),
    ("_", set()),
    ("", EVERYONE),
]


def test_semantics(app, people):
    """Every case runs on one population (building it per case is slow); a failure
    lists every query that disagrees."""
    wrong = {}
    with app.test_request_context():
        for query, expected in SEMANTICS:
            found = names(query)
            if found != expected:
                wrong[query] = (found, expected)
    assert wrong == {}


ERRORS = [
    ('"Contract" = "maybe"', 13, "“Contract” is a checkbox: compare it with yes/no or 0/1."),
    ('"Contract" = 2', 13, "“Contract” is a checkbox: compare it with yes/no or 0/1."),
    ('"Contract" IS EMPTY', 11, "never empty"),
    ('"Amount" ~ "1"', 9, "~ does not work on “Amount” (a number)"),
    ('"Amount" > yes', 11, "“Amount” is a number"),
    ("Birthday = 12", 11, "“Birthday” is a date"),
    ("city = 12", 7, "“City” is text: put the value in double quotes"),
    ('city = "  "', 7, "city IS EMPTY"),
    ('Stage = "Lead"', 8, "“Lead” is not a choice of “Stage”"),
    ('"Contrakt" < 1', 0, "No field named “Contrakt”; did you mean “Contract”"),
    ("ciy = 1", 0, "did you mean “city”?"),
    ("cf:nothing = 1", 0, "No field named “cf:nothing”."),
    ("created IS EMPTY", 8, "always has a value"),
    ('tags < "a"', 5, "< does not work on “Tags”"),
]


def test_errors_name_the_field_and_the_position(app, people):
    wrong = {}
    with app.test_request_context():
        for query, position, message in ERRORS:
            try:
                query_condition(query, ctx=CTX)
            except QueryError as error:
                if message not in error.message or error.position != position:
                    wrong[query] = (error.position, error.message)
            else:
                wrong[query] = "no error"
    assert wrong == {}


def test_relative_dates_follow_today(app, people):
    later = SearchContext(today=CTX.today.replace(month=5), zone=CTX.zone)
    with app.test_request_context():
        assert names("created > -30d", later) == set()
        assert names("created > -90d", later) == {"Wiśniewska", "Nowak", "Müller"}


def test_stored_tree_survives_a_renamed_label_and_flags_an_archived_field(app, people):
    with app.test_request_context():
        stored = to_dict(parse_query('"Contract" < 1 AND city ~ "lodz"'))
        assert stored["and"][0] == {"field": "cf:contract", "op": "<", "value": 1}
        field = db.session.scalar(select(CustomField).where(CustomField.key == "contract"))
        update_field(field, FieldSpec(label="Umowa", field_type=field.type, choices=[]), "PL")
        db.session.commit()
    with app.test_request_context():
        tree = from_dict(stored)
        assert query_text(tree) == 'Umowa < 1 AND city ~ "lodz"'
        admin = make_user()
        found = db.session.scalars(select(Client.last_name).where(client_condition(admin, tree)))
        assert set(found) == {"Nowak"}
        assert field_problems(tree, Catalog.build()) == []
        archive_field(db.session.scalar(select(CustomField).where(CustomField.key == "contract")))
        db.session.commit()
    with app.test_request_context():
        catalog = Catalog.build()
        problems = field_problems(tree, catalog)
        assert [(p.ref, p.label, p.archived) for p in problems] == [("cf:contract", "Umowa", True)]
        assert query_text(tree, catalog).startswith("cf:contract < 1")
        with pytest.raises(QueryError, match="archived") as caught:
            client_condition(admin, tree, catalog)
        assert caught.value.position is None  # a stored tree has no text to point into
        with pytest.raises(QueryError, match="archived"):
            compile_tree(tree, catalog, CTX)
        with pytest.raises(QueryError, match="archived"):
            parse_query("Umowa < 1")


def test_a_custom_label_that_collides_with_a_core_field_is_written_by_key(app, people):
    with app.test_request_context():
        make_field("City", "text")  # key "city", like the core field
        make_client(last_name="Kowalska", city="Gdańsk", custom={"city": "Łódź"})
        catalog = Catalog.build()
        assert names('city = "Łódź"') == {"Wiśniewska"}  # the core field wins
        assert names('cf:city = "Łódź"') == {"Kowalska"}
        tree = parse_query('cf:city = "Łódź"', catalog)
        assert query_text(tree, catalog) == 'cf:city = "Łódź"'


def test_phone_values_are_compared_as_stored(app):
    with app.test_request_context():
        make_client(last_name="Telefon", phone="+48601234567")
        make_client(last_name="Inny", phone="+420601123456")
        assert names('phone = "601 234 567"') == {"Telefon"}
        assert names('phone ~ "601 234"') == {"Telefon"}
        assert names('phone ~ "+420"') == {"Inny"}
