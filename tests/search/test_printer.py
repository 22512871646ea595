"""Canonical text and the stored (dict) form of trees."""

from __future__ import annotations

from datetime import date

import pytest

from crm.search.errors import QueryError
from crm.search.parser import parse
from crm.search.printer import to_text
from crm.search.tree import And, Condition, Not, Op, Or, RelativeDate, Text, from_dict, to_dict


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ('"Contract"<1 and city="Łódź"', 'Contract < 1 AND city = "Łódź"'),
        ('"Miasto rodzinne" ~ "x\\"y"', '"Miasto rodzinne" ~ "x\\"y"'),
        ("a or b c", "a OR b AND c"),
        ("(a or b) c", "(a OR b) AND c"),
        ("(a b) (c d)", "(a AND b) AND (c AND d)"),
        ("not (a or b)", "NOT (a OR b)"),
        ("x in (1,5, 2) y is not empty", "x IN (1.5, 2) AND y IS NOT EMPTY"),
        ("d >= TODAY e < -7D f = +3d", "d >= today AND e < -7d AND f = +3d"),
        ("b = TRUE c != False", "b = yes AND c != no"),
        ("n = 12,50 m = 0,0000001", "n = 12.5 AND m = 0.0000001"),
        ('"or" "a b" "" x', '"or" AND "a b" AND "" AND x'),
        ("Nowak, Anna", "Nowak AND Anna"),
    ],
)
def test_canonical_text(typed, canonical):
    assert to_text(parse(typed)) == canonical
    assert parse(canonical) == parse(typed)


def test_dict_form_is_plain_json():
    tree = And(
        (
            Condition("cf:contract", Op.LT, 1),
            Or((Condition("created", Op.GT, RelativeDate(-30)), Text("anna"))),
            Not(Condition("cf:birthday", Op.IN, (date(1990, 5, 17), True, 2.5))),
            Condition("owner", Op.EMPTY),
        )
    )
    assert to_dict(tree) == {
        "and": [
            {"field": "cf:contract", "op": "<", "value": 1},
            {"or": [{"field": "created", "op": ">", "value": {"days": -30}}, {"text": "anna"}]},
            {
                "not": {
                    "field": "cf:birthday",
                    "op": "IN",
                    "value": [{"date": "1990-05-17"}, True, 2.5],
                }
            },
            {"field": "owner", "op": "IS EMPTY"},
        ]
    }
    assert from_dict(to_dict(tree)) == tree
    # A group of one, as a builder may store it, is that node.
    assert from_dict({"or": [{"text": "anna"}]}) == Text("anna")


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        {"and": []},
        {"and": "x"},
        {"text": 1},
        {"field": "", "op": "="},
        {"field": "city", "op": "LIKE", "value": "x"},
        {"field": "city", "op": "=", "value": None},
        {"field": "city", "op": "IN", "value": []},
        {"field": "city", "op": "IS EMPTY", "value": "x"},
        {"field": "city", "op": "=", "value": {"date": "2026-02-30"}},
        {"field": "city", "op": "=", "value": {"days": 10**9}},
        {"field": "city", "op": "=", "value": float("nan")},
        {"field": "city", "op": "=", "value": 10**20},
        {"field": "city", "op": "=", "value": [1]},
        {"not": {"not": {"x": 1}}},
    ],
)
def test_damaged_stored_trees_are_query_errors(data):
    with pytest.raises(QueryError, match="damaged") as caught:
        from_dict(data)
    assert caught.value.position is None
