"""The text query language: shapes, precedence, literals, and errors with positions."""

from __future__ import annotations

from datetime import date

import pytest

from crm.search.errors import QueryError
from crm.search.parser import MAX_DEPTH, MAX_LENGTH, MAX_TERMS, parse
from crm.search.tree import And, Condition, Not, Op, Or, RelativeDate, Text


def c(field: str, op: str, value=None) -> Condition:  # type: ignore[no-untyped-def]
    return Condition(field, Op(op), value)


def test_blank_queries_are_no_filter():
    assert parse("") is None
    assert parse("   \t\n") is None
    assert parse(" , ,") is None


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("Wiśniewska", Text("Wiśniewska")),
        ("anna@ex", Text("anna@ex")),
        ("+48 601", And((Text("+48"), Text("601")))),
        ('"Anna Nowak"', Text("Anna Nowak")),
        ("Nowak, Anna", And((Text("Nowak"), Text("Anna")))),
        ("O'Brien 100%", And((Text("O'Brien"), Text("100%")))),
        ("Hello!", Text("Hello!")),
    ],
)
def test_plain_words_are_free_text_terms(text, tree):
    assert parse(text) == tree


def test_a_condition_with_quoted_names_and_values():
    assert parse('"Contract" < 1 AND city = "Łódź"') == And(
        (c("Contract", "<", 1), c("city", "=", "Łódź"))
    )
    assert parse('"Miasto Łódź" ~ "x\\"y\\\\z"') == c("Miasto Łódź", "~", 'x"y\\z')
    # No spaces needed around operators; keywords in any case.
    assert parse('city="Łódź" and x!=1') == And((c("city", "=", "Łódź"), c("x", "!=", 1)))


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">=", "~"])
def test_every_comparison_operator(op):
    assert parse(f'x {op} "v"') == c("x", op, "v")


def test_in_and_emptiness():
    assert parse('city IN ("Brno", "Łódź")') == c("city", "IN", ("Brno", "Łódź"))
    assert parse("x in (1)") == c("x", "IN", (1,))
    assert parse("x IS EMPTY") == c("x", "IS EMPTY")
    assert parse("x is not empty") == c("x", "IS NOT EMPTY")


def test_precedence_not_binds_tighter_than_and_than_or():
    a, b, d = Text("a"), Text("b"), Text("d")
    assert parse("a OR b AND d") == Or((a, And((b, d))))
    assert parse("a AND b OR d") == Or((And((a, b)), d))
    assert parse("NOT a AND b") == And((Not(a), b))
    assert parse("NOT (a AND b)") == Not(And((a, b)))
    assert parse("(a OR b) d") == And((Or((a, b)), d))
    assert parse("a OR b OR d") == Or((a, b, d))
    assert parse("(a OR b) OR d") == Or((Or((a, b)), d))
    assert parse("NOT NOT a") == Not(Not(a))


def test_bare_words_and_conditions_mix_as_and():
    assert parse('anna city = "Łódź"') == And((Text("anna"), c("city", "=", "Łódź")))


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("12", 12),
        ("-3", -3),
        ("+7", 7),
        ("12.5", 12.5),
        ("12,5", 12.5),
        ("12.0", 12.0),
        ("0,001", 0.001),
        ("2026-01-31", date(2026, 1, 31)),
        ("-30d", RelativeDate(-30)),
        ("+7d", RelativeDate(7)),
        ("today", RelativeDate(0)),
        ("TODAY", RelativeDate(0)),
        ("yes", True),
        ("True", True),
        ("no", False),
        ("false", False),
    ],
)
def test_literals(word, value):
    tree = parse(f"x = {word}")
    assert tree == c("x", "=", value)
    assert type(tree.value) is type(value)  # 1 is not yes, 12.0 stays a float


def test_decimal_comma_needs_digits_on_both_sides_so_lists_take_a_space():
    assert parse("x IN (1,5)") == c("x", "IN", (1.5,))
    assert parse("x IN (1, 5)") == c("x", "IN", (1, 5))
    assert parse("x IN (1,5, 2)") == c("x", "IN", (1.5, 2))


def test_condition_positions_point_at_field_operator_and_values():
    tree = parse('  city IN ("a", "b")')
    assert (tree.pos, tree.op_pos, tree.value_pos) == (2, 7, (11, 16))


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("city = ", 7, "Expected a value after ="),
        ("city = Łódź", 7, 'put text in double quotes ("Łódź")'),
        ('city = "Łódź', 7, "quoted text is not closed"),
        ("(a OR b", 7, "Expected ) to close the ( at character 1"),
        ("a)", 1, "There is no ( for this ) to close"),
        ("x IN 1", 5, "Expected ( after IN"),
        ("x IN ()", 6, "Expected a value after IN"),
        ('x IN ("a" "b")', 10, "Expected , or ) in the list"),
        ("x IS FULL", 5, "Expected EMPTY or NOT EMPTY after IS"),
        ("a AND", 5, "Expected a condition or a search word, found the end"),
        ("OR a", 0, "put it in double quotes"),
        ("a = 1 = 2", 6, "Expected AND, OR or the end of the query"),
        ("x = 2026-02-30", 4, "not a real date"),
        ("x = 1000000000000000", 4, "too large"),
        ("x = -99999999d", 4, "relative date reaches at most"),
        ("x = „Łódź”", 4, "straight double quotes"),
        ("ab\x00c", 2, "control character"),
        ("x = <", 4, "Expected a value after ="),
        ("()", 1, "Expected a condition or a search word"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(text, position, expected):
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert caught.value.position == position
    assert expected in caught.value.message
    assert f"(character {position + 1})" in str(caught.value)


def test_limits_are_errors_not_crashes():
    with pytest.raises(QueryError, match="too long") as caught:
        parse("a" * (MAX_LENGTH + 1))
    assert caught.value.position == MAX_LENGTH
    with pytest.raises(QueryError, match="nested too deeply"):
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(QueryError, match="nested too deeply"):
        parse("NOT " * 100 + "a")
    with pytest.raises(QueryError, match="too many conditions"):
        parse(" ".join(["a"] * (MAX_TERMS + 1)))
    assert parse("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == Text("a")
