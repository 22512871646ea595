"""The filter builder: its form -> the query text (per field type), the text -> the
builder, round trips both ways, its buttons, and hostile input."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from html import unescape
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from crm.clients.models import Client, Tag
from crm.extensions import db
from crm.search import builder
from crm.search.builder import TEXT_ONLY, as_form, form_values, from_form, from_tree, to_tree
from crm.search.fields import Catalog, ValueType, resolve
from crm.search.parser import parse
from crm.search.tree import And, Node, Not, Or, Text
from tests.conftest import make_client
from tests.search.support import condition_strategy, make_fields, static_catalog, trees

CATALOG = static_catalog()


def normalised(node: Node | None, catalog: Catalog = CATALOG) -> Node | None:
    """The tree as the builder writes it: checkbox values as 1/0 (yes/no read the same)."""
    if node is None or isinstance(node, Text):
        return node
    if isinstance(node, Not):
        return Not(normalised(node.child, catalog))  # type: ignore[arg-type]
    if isinstance(node, And | Or):
        return type(node)(tuple(normalised(c, catalog) for c in node.children))  # type: ignore[misc]
    field = catalog.get(node.field)
    if field is not None and field.value_type == ValueType.CHECKBOX:
        ints = tuple(1 if v is True or v == 1 else 0 for v in node.values)
        return replace(
            node,
            value=ints if node.value is not None and isinstance(node.value, tuple) else ints[0],
        )
    return node


def via_form(node: Node | None, catalog: Catalog = CATALOG) -> Node | None:
    """tree -> builder -> its form inputs -> builder -> tree."""
    root = from_tree(node, catalog)
    return to_tree(from_form(as_form(form_values(root)), catalog), catalog)


# --- the text for each kind of field ---------------------------------------------------


def row(field: str, op: str, **inputs: Any) -> dict[str, Any]:
    return {"field": field, "op": op, **inputs}


def form_of(*rows: dict[str, Any], join: str = "and", **extra: Any) -> dict[str, Any]:
    """Builder form data with the given rows under the root (no group)."""
    data: dict[str, Any] = {"r.kind": "group", "r.join": join, "synced": ""}
    for i, spec in enumerate(rows):
        path = f"r.{i}"
        data[f"{path}.kind"] = "cond"
        data[f"{path}.was"] = spec["field"]
        for key, value in spec.items():
            data[f"{path}.{key}"] = value
    data.update(extra)
    return data


CASES = [
    (row("cf:contract", "<", value="1"), "Contract < 1"),
    (row("cf:contract", "=", value="0"), "Contract = 0"),
    (row("cf:contract", "IN", values=["1", "0"]), "Contract IN (1, 0)"),
    (row("city", "=", value="Łódź"), 'city = "Łódź"'),
    (row("city", "~", value=" lodz "), 'city ~ "lodz"'),
    (row("city", "IS EMPTY"), "city IS EMPTY"),
    (row("country", "IN", lines="PL\nDE\n\n"), 'country IN ("PL", "DE")'),
    (row("phone", "~", value="601 234"), 'phone ~ "601 234"'),
    (row("cf:amount", ">=", value="1250,50"), "Amount >= 1250.5"),
    (row("cf:amount", "<", value="-3"), "Amount < -3"),
    (row("cf:amount", "IN", lines="1\n2,5"), "Amount IN (1, 2.5)"),
    (row("cf:amount", "IS NOT EMPTY"), "Amount IS NOT EMPTY"),
    (row("cf:birthday", "<", mode="date", value="1990-01-01"), "Birthday < 1990-01-01"),
    (row("created", ">", mode="ago", value="30"), "created > -30d"),
    (row("updated", "<=", mode="today"), "updated <= today"),
    (row("cf:birthday", ">=", mode="ahead", value="7"), "Birthday >= +7d"),
    (row("created", "IN", lines="2026-01-31\n-1d\ntoday"), "created IN (2026-01-31, -1d, today)"),
    (row("cf:stage", "=", value="lead"), 'Stage = "lead"'),
    (row("cf:stage", "IN", values=["lead", "lost"]), 'Stage IN ("lead", "lost")'),
    (row("cf:stage", "~", value="le"), 'Stage ~ "le"'),
    (row("cf:skills", "=", value="cut"), 'Skills = "cut"'),
    (row("cf:skills", "IN", values=["cut", "nails"]), 'Skills IN ("cut", "nails")'),
    (row("cf:miasto_rodzinne", "=", value="Łódź"), '"Miasto rodzinne" = "Łódź"'),
    (row("tags", "=", value="VIP"), 'tags = "VIP"'),
    (row("owner", "IS EMPTY"), "owner IS EMPTY"),
    (row("owner", "~", value="nowak"), 'owner ~ "nowak"'),
    (row("_text", "~", value="anna"), "anna"),
    (row("_text", "~", value="Anna Nowak"), '"Anna Nowak"'),
    (row("city", "=", value="Brno", **{"not": "1"}), 'NOT city = "Brno"'),
]


@pytest.fixture
def fields(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        make_fields()


def post(http, data: dict[str, Any], **headers: str):  # type: ignore[no-untyped-def]
    return http.post("/search/builder", data=data, headers={"HX-Request": "true", **headers})


def search_box(body: str) -> str:
    match = re.search(r'<input type="search" id="q" name="q" value="([^"]*)"', body)
    assert match, "no search box in the answer"
    return unescape(match.group(1))


@pytest.mark.parametrize(("spec", "text"), CASES, ids=[t for _s, t in CASES])
def test_each_field_type_gives_the_right_text(admin_client, fields, spec, text):
    response = post(admin_client, form_of(spec))
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert search_box(body) == text
    # The list follows, the address too (bookmarkable), and the text parses back.
    assert 'id="client-list" hx-swap-oob="true"' in body
    assert response.headers["HX-Push-Url"].startswith("/clients/?q=")
    assert parse(text) is not None


def test_groups_and_not_give_parentheses(admin_client, fields):
    data = form_of(row("cf:contract", "<", value="1"))
    data.update(
        {
            "r.1.kind": "group",
            "r.1.join": "or",
            "r.1.0.kind": "cond",
            "r.1.0.field": "city",
            "r.1.0.was": "city",
            "r.1.0.op": "=",
            "r.1.0.value": "Łódź",
            "r.1.1.kind": "cond",
            "r.1.1.field": "city",
            "r.1.1.was": "city",
            "r.1.1.op": "=",
            "r.1.1.value": "Brno",
        }
    )
    body = post(admin_client, data).get_data(as_text=True)
    assert search_box(body) == 'Contract < 1 AND (city = "Łódź" OR city = "Brno")'
    data["r.1.not"] = "1"
    body = post(admin_client, data).get_data(as_text=True)
    assert search_box(body) == 'Contract < 1 AND NOT (city = "Łódź" OR city = "Brno")'
    data["r.join"] = "or"
    data["r.not"] = "1"
    body = post(admin_client, data).get_data(as_text=True)
    assert search_box(body) == 'NOT (Contract < 1 OR NOT (city = "Łódź" OR city = "Brno"))'


def test_the_builder_filters_the_list(admin_client, app, fields):
    with app.app_context():
        make_client(last_name="Bezumowy", city="Łódź", custom={"contract": 0})
        make_client(last_name="Zumową", city="Łódź", custom={"contract": 1})
        make_client(last_name="Brneński", city="Brno", custom={})
    data = form_of(row("cf:contract", "<", value="1"), row("city", "=", value="Łódź"))
    body = post(admin_client, data).get_data(as_text=True)
    assert search_box(body) == 'Contract < 1 AND city = "Łódź"'
    assert "<strong>Zofia Bezumowy</strong>" in body
    assert "Zumową</strong>" not in body and "Brneński</strong>" not in body
    assert "1 client" in body


def synced_of(body: str) -> str:
    match = re.search(r'name="synced" value="([^"]*)"', body)
    assert match
    return unescape(match.group(1))


def test_incomplete_rows_stay_in_the_builder_but_not_in_the_query(admin_client, fields):
    data = form_of(row("city", "=", value="Brno"), row("cf:amount", ">", value=""))
    data["r.2.kind"] = "cond"  # a row without a field yet
    response = post(admin_client, data)
    body = response.get_data(as_text=True)
    assert search_box(body) == 'city = "Brno"'
    assert 'name="r.1.field"' in body and 'name="r.2.field"' in body
    # The same query again (synced says so): neither the text nor the list is sent.
    data["synced"] = synced_of(body)
    again = post(admin_client, data)
    assert "HX-Push-Url" not in again.headers
    assert 'id="client-list"' not in again.get_data(as_text=True)


def test_a_value_that_does_not_fit_is_shown_next_to_its_row(admin_client, fields):
    data = form_of(row("city", "=", value="Brno"), row("cf:amount", ">", value="dużo"))
    body = post(admin_client, data).get_data(as_text=True)
    assert search_box(body) == 'city = "Brno"'
    assert "Enter a number such as 12,5." in body
    assert 'id="b-r-1-error"' in body and 'aria-invalid="true"' in body
    assert 'value="dużo"' in body  # what was typed stays
    data = form_of(row("cf:birthday", "<", mode="ago", value="99999999"))
    assert "Enter a number of days" in post(admin_client, data).get_data(as_text=True)
    # A choice that is not one of the field's is no value at all (the select offers none).
    data = form_of(row("cf:stage", "=", value="not a choice"))
    assert "HX-Push-Url" not in post(admin_client, data).headers


def test_buttons_add_group_remove_and_clear(app, fields):
    with app.test_request_context():
        catalog = Catalog.build()
        root = from_form(as_form(form_of(row("city", "=", value="Brno"))), catalog)
        builder.apply_action(root, "add:r")
        assert len(root.items) == 2 and root.items[1].fresh
        builder.apply_action(root, "group")
        group = root.items[2]
        assert isinstance(group, builder.Group) and group.join == "or" and len(group.items) == 1
        builder.apply_action(root, "add:r.2")
        assert len(group.items) == 2
        builder.apply_action(root, "remove:r.2.0")
        assert len(group.items) == 1
        builder.apply_action(root, "remove:r.0")
        assert len(root.items) == 2 and isinstance(root.items[1], builder.Group)
        for junk in ("remove:r.9", "remove:x", "add:r.0", "remove:r.1.7", "add:r.1.0.0", "zap"):
            builder.apply_action(root, junk)
        assert len(root.items) == 2
        builder.apply_action(root, "clear")
        assert root.items == []


def test_a_new_field_starts_with_a_fitting_operator_and_no_value(app, fields):
    with app.test_request_context():
        catalog = Catalog.build()
        data = form_of(row("cf:amount", "~", value="12"))
        data["r.0.was"] = "city"  # the person just switched from City to Amount
        (fresh,) = from_form(as_form(data), catalog).items
        assert fresh.op == "=" and fresh.value == ""
        data["r.0.was"] = "cf:amount"  # an operator that does not fit falls back
        (kept,) = from_form(as_form(data), catalog).items
        assert kept.op == "=" and kept.value == "12"
        # = -> IN keeps the value as the first of the list, and back.
        data = form_of(row("cf:stage", "IN", value="lead"))
        (listed,) = from_form(as_form(data), catalog).items
        assert listed.values == ["lead"]
        data = form_of(row("city", "=", lines="Brno\nŁódź"))
        (single,) = from_form(as_form(data), catalog).items
        assert single.value == "Brno"


@pytest.mark.parametrize(
    "text",
    [
        '"Contract" < 1 AND city = "Łódź"',
        '"Contract" = yes OR NOT tags IN ("VIP", "new")',
        'anna (city = "Brno" OR city = "Łódź") AND NOT (Amount > 10 AND Amount < 20.5)',
        "NOT (owner IS EMPTY OR created > -30d)",
        'Stage IN ("lost", "lead") AND Skills != "cut" AND Birthday <= today',
        '"Miasto rodzinne" ~ "lodz" AND phone = "601 234 567"',
        'NOT "Contract" IN (1, 0)',
        "updated IN (2026-01-31, +2d)",
    ],
)
def test_text_to_builder_and_back_is_the_same_query(app, fields, text):
    with app.test_request_context():
        catalog = Catalog.build()
        tree = resolve(parse(text), catalog)
        view = builder.from_query(text, catalog)
        assert view.notice is None
        assert to_tree(view.root, catalog) == normalised(tree, catalog)
        assert via_form(tree, catalog) == normalised(tree, catalog)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a OR (b AND (c OR d))", "nested more than one level"),
        ('NOT NOT city = "Brno"', "NOT in front of NOT"),
        ('country IN ("PL", "PL")', None),
        ('Stage IN ("lead", "lead")', "names a value twice"),
        ('city = " Brno"', "spaces at its ends"),
    ],
)
def test_text_the_builder_cannot_show_keeps_the_text(app, fields, text, reason):
    with app.test_request_context():
        catalog = Catalog.build()
        view = builder.from_query(text, catalog)
        if reason is None:  # text lists may repeat a value: the builder shows both
            assert view.notice is None
            return
        assert view.synced == TEXT_ONLY and not view.root.items
        assert reason in (view.notice or "")


def test_the_search_box_updates_the_builder(admin_client, fields):
    headers = {"HX-Request": "true", "HX-Trigger": "q", "HX-Trigger-Name": "q"}
    body = admin_client.get(
        "/clients/", query_string={"q": '"Contract" < 1'}, headers=headers
    ).get_data(as_text=True)
    assert 'id="builder" class="builder" hx-swap-oob="true"' in body
    assert 'name="r.0.field"' in body and '<option value="cf:contract" selected>' in body
    # Sorting or paging swaps the list only.
    body = admin_client.get(
        "/clients/", query_string={"q": "x", "sort": "city"}, headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert 'id="builder"' not in body
    # A query with an error, or one the builder cannot show: the builder says so.
    body = admin_client.get(
        "/clients/", query_string={"q": 'city = "Brno'}, headers=headers
    ).get_data(as_text=True)
    assert "fix it there" in body
    page = admin_client.get("/clients/", query_string={"q": "a OR (b AND (c OR d))"})
    text = page.get_data(as_text=True)
    assert "The builder cannot show this query" in text
    assert '<details class="builder-panel" id="builder-panel" open>' in text


def test_an_empty_builder_leaves_a_text_it_cannot_show_alone(admin_client, fields):
    data = {"r.kind": "group", "r.join": "and", "synced": TEXT_ONLY, "base_q": "a OR (b AND c)"}
    response = post(admin_client, data | {"action": "add:r"})
    body = response.get_data(as_text=True)
    assert "HX-Push-Url" not in response.headers and 'id="q"' not in body
    assert "keeps its query until a condition here is complete" in body
    assert f'name="synced" value="{TEXT_ONLY}"' in body
    # The first complete condition replaces the text.
    data = form_of(row("city", "=", value="Brno")) | {"synced": TEXT_ONLY}
    assert search_box(post(admin_client, data).get_data(as_text=True)) == 'city = "Brno"'


PAYLOADS = [
    "x' OR 1=1 --",
    '"; DROP TABLE clients; --',
    "') OR ('1'='1",
    "%",
    "_",
    "\\",
    '\\" OR "" = "',
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_in_builder_values_is_just_text(admin_client, app, fields, payload):
    with app.app_context():
        make_client(last_name="Kot", city="Gdańsk")
        before = db.session.scalar(select(func.count()).select_from(Client))
    for spec in (
        row("city", "=", value=payload),
        row("city", "~", value=payload),
        row("tags", "IN", lines=payload),
        row("_text", "~", value=payload),
        row("cf:amount", ">", value=payload),
    ):
        response = post(admin_client, form_of(spec))
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        assert "Kot</strong>" not in body
        if 'id="q"' in body:  # a value that fits: the text quotes it, and parses back
            text = search_box(body)
            assert parse(text) is not None
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == before
        assert db.session.scalar(select(func.count()).select_from(Tag)) == 0


def test_hostile_form_data_never_breaks_the_builder(admin_client, fields):
    junk = {
        "r.kind": "group",
        "r.join": "xor",
        "r.not": "maybe",
        "r.0.kind": "cond",
        "r.0.field": "password_hash",
        "r.0.op": "; DROP",
        "r.1.kind": "cond",
        "r.1.field": "city",
        "r.1.was": "city",
        "r.1.op": "LIKE",
        "r.1.value": "x" * 10_000,
        "r.2.kind": "group",
        "r.2.0.kind": "group",
        "r.2.0.0.kind": "cond",
        "r.99999.kind": "cond",
        "q.0.kind": "cond",
        "r.3.kind": "cond",
        "r.3.field": "cf:stage",
        "r.3.was": "cf:stage",
        "r.3.op": "IN",
        "r.3.values": ["lead", "nope", "lead"],
        "synced": "{not json",
        "action": "remove:r.1.2.3",
    }
    response = post(admin_client, junk)
    assert response.status_code == 200
    # Unknown fields and operators fall back or drop out; the value is cut at 500.
    expected = f'city = "{"x" * 500}" AND Stage IN ("lead", "lead")'
    assert search_box(response.get_data(as_text=True)) == expected
    many = form_of(*[row("city", "=", value=f"c{n}") for n in range(150)])
    response = post(admin_client, many | {"action": "add:r"})
    assert response.status_code == 200
    assert response.get_data(as_text=True).count('.kind" value="cond"') == 100


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(condition_strategy(), max_leaves=6))
def test_any_tree_the_builder_shows_comes_back_the_same(tree):
    try:
        root = from_tree(tree, CATALOG)
    except builder.NotRepresentable:
        return
    assert to_tree(root, CATALOG) == normalised(tree)
    assert to_tree(from_form(as_form(form_values(root)), CATALOG), CATALOG) == normalised(tree)


def test_the_synced_marker_is_the_trees_json():
    tree = parse("a")
    assert json.loads(builder.synced_marker(tree)) == {"text": "a"}
    assert builder.synced_marker(None) == ""


def test_back_and_forward_get_the_whole_page(admin_client, fields):
    """htmx restores a pushed address by asking for it again: the page, not the list."""
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    body = admin_client.get("/clients/", query_string={"q": "x"}, headers=headers)
    assert "<html" in body.get_data(as_text=True)


def test_without_javascript_the_builder_answers_with_the_page(admin_client, fields):
    response = admin_client.post("/search/builder", data=form_of(row("city", "=", value="Brno")))
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" in body
    assert search_box(body) == 'city = "Brno"' and 'name="r.0.value"' in body
