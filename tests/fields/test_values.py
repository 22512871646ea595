"""Parsing what a person typed into stored custom field values."""

from __future__ import annotations

import pytest

from crm.fields.models import CustomField, FieldType
from crm.fields.values import FieldValueError, display, parse_number, parse_value


def field(kind: FieldType, choices: list[str] | None = None) -> CustomField:
    return CustomField(key="f", label="F", field_type=kind.value, choices=choices or [])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1250", 1250),
        ("12,5", 12.5),
        ("12.5", 12.5),
        ("1 234,50", 1234.5),
        ("1.234,5", 1234.5),
        ("1,234.5", 1234.5),
        ("-3", -3),
        ("0", 0),
        ("1\u00a0000", 1000),
    ],
)
def test_numbers_accept_comma_and_point(raw, expected):
    assert parse_number(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "1,2,3", "NaN", "Infinity", "1e400", "--1"])
def test_bad_numbers_are_refused(raw):
    with pytest.raises(FieldValueError):
        parse_number(raw)


def test_checkbox_is_stored_as_one_or_zero(ctx):
    box = field(FieldType.CHECKBOX)
    assert parse_value(box, "y", "PL") == 1
    assert parse_value(box, "", "PL") == 0
    assert parse_value(box, None, "PL") == 0
    with pytest.raises(FieldValueError):
        parse_value(box, "maybe", "PL")
    assert display(box, None) == "No"
    assert display(box, 1) == "Yes"


def test_empty_input_removes_the_value(ctx):
    for kind in (
        FieldType.TEXT,
        FieldType.NUMBER,
        FieldType.DATE,
        FieldType.EMAIL,
        FieldType.PHONE,
        FieldType.URL,
    ):
        assert parse_value(field(kind), "  ", "PL") is None


def test_typed_values(ctx):
    assert parse_value(field(FieldType.DATE), "2026-01-31", "PL") == "2026-01-31"
    assert parse_value(field(FieldType.PHONE), "601 234 567", "PL") == "+48601234567"
    assert parse_value(field(FieldType.PHONE), "+420 602 123 456", "PL") == "+420602123456"
    assert parse_value(field(FieldType.EMAIL), "Jiri@Example.CZ", "PL") == "Jiri@example.cz"
    assert parse_value(field(FieldType.URL), "example.com/a", "PL") == "https://example.com/a"
    assert parse_value(field(FieldType.TEXT), "  Łódź  ", "PL") == "Łódź"
    choice = field(FieldType.SINGLE_CHOICE, ["Łódź", "Kraków"])
    assert parse_value(choice, "Kraków", "PL") == "Kraków"
    multi = field(FieldType.MULTI_CHOICE, ["A", "B", "C"])
    assert parse_value(multi, ["C", "A"], "PL") == ["A", "C"]  # kept in definition order
    assert parse_value(multi, [], "PL") is None


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (FieldType.DATE, "31.01.2026"),
        (FieldType.DATE, "2026-02-30"),
        (FieldType.PHONE, "12"),
        (FieldType.EMAIL, "a@"),
        (FieldType.URL, "javascript:alert(1)"),
        (FieldType.URL, "ftp://example.com"),
        (FieldType.TEXT, "x" * 501),
    ],
)
def test_bad_values_get_a_message(ctx, kind, raw):
    with pytest.raises(FieldValueError) as error:
        parse_value(field(kind), raw, "PL")
    assert str(error.value)


def test_choice_must_be_one_of_the_choices(ctx):
    with pytest.raises(FieldValueError):
        parse_value(field(FieldType.SINGLE_CHOICE, ["A"]), "B", "PL")
    with pytest.raises(FieldValueError):
        parse_value(field(FieldType.MULTI_CHOICE, ["A"]), ["A", "Z"], "PL")
