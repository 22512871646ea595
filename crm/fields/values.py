"""Turning what a person typed into a stored custom field value, and back.

Stored forms (JSON): text-like types as strings; number as a JSON number; date as
'YYYY-MM-DD' (sorts as a date); checkbox as 1 or 0 (so `"Contract" < 1` reads naturally
and an unticked box compares as 0); multi choice as a list of strings. An empty input
removes the key: empty is never stored as a value.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext as _

from crm import l10n
from crm.fields.models import CustomField, FieldType

MAX_TEXT = 500
MAX_LONG_TEXT = 10_000
TRUE_WORDS = {"1", "y", "yes", "on", "true", "tak", "ja", "ano", "x"}
FALSE_WORDS = {"0", "n", "no", "off", "false", "nie", "nein", "ne", ""}


class FieldValueError(ValueError):
    """The message says, for a person, what is wrong with the value."""


def decimal_text(raw: str) -> str:
    """A typed number in Python's notation: '1 234,5', '1.234,5', "1'234.5" -> '1234.5'.
    A decimal comma or point is accepted; spaces, apostrophes and the other mark are
    thousands separators."""
    cleaned = re.sub(r"[\s\u00a0\u202f']", "", raw)
    if "," in cleaned and "." in cleaned:
        if cleaned.rfind(",") > cleaned.rfind("."):
            return cleaned.replace(".", "").replace(",", ".")
        return cleaned.replace(",", "")
    if cleaned.count(",") == 1:
        return cleaned.replace(",", ".")
    return cleaned


def parse_number(raw: str) -> int | float:
    """Accepts '1234.5', '1234,5', '1 234,5' and '1.234,5'."""
    cleaned = decimal_text(raw)
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        raise FieldValueError(_("Enter a number, for example 1250 or 12,5.")) from None
    if not number.is_finite() or abs(number) >= Decimal("1e15"):
        raise FieldValueError(_("Enter a number, for example 1250 or 12,5."))
    return int(number) if number == number.to_integral_value() else float(number)


def parse_phone(raw: str, region: str) -> str:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise FieldValueError(_("Enter a phone number, for example +48 601 234 567.")) from None
    if not phonenumbers.is_valid_number(number):
        raise FieldValueError(_("This is not a valid phone number."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_email(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise FieldValueError(_("Enter a valid email address, like name@example.com.")) from exc


def parse_value(field: CustomField, raw: Any, phone_region: str) -> Any:
    """The stored value for `raw` (a string, or a list for multi choice); None if empty."""
    kind = field.type
    if kind == FieldType.MULTI_CHOICE:
        items = raw if isinstance(raw, list) else ([raw] if raw else [])
        items = [str(i).strip() for i in items if str(i).strip()]
        unknown = [i for i in items if i not in field.choices]
        if unknown:
            raise FieldValueError(_("Not one of the choices: %(v)s.", v=", ".join(unknown)))
        return [c for c in field.choices if c in items] or None
    if isinstance(raw, list):
        raw = raw[-1] if raw else ""
    text = "" if raw is None else str(raw).strip()
    if kind == FieldType.CHECKBOX:
        word = text.lower()
        if word in TRUE_WORDS:
            return 1
        if word in FALSE_WORDS:
            return 0
        raise FieldValueError(_("Enter yes or no."))
    if not text:
        return None
    if kind == FieldType.TEXT:
        if len(text) > MAX_TEXT:
            raise FieldValueError(_("At most %(n)s characters.", n=MAX_TEXT))
        return text
    if kind == FieldType.LONG_TEXT:
        text = str(raw).strip()
        if len(text) > MAX_LONG_TEXT:
            raise FieldValueError(_("At most %(n)s characters.", n=MAX_LONG_TEXT))
        return text
    if kind == FieldType.NUMBER:
        return parse_number(text)
    if kind == FieldType.DATE:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise FieldValueError(_("Enter a date as YYYY-MM-DD.")) from None
    if kind == FieldType.SINGLE_CHOICE:
        if text not in field.choices:
            raise FieldValueError(_("Pick one of the choices."))
        return text
    if kind == FieldType.EMAIL:
        return parse_email(text)
    if kind == FieldType.PHONE:
        return parse_phone(text, phone_region)
    if kind == FieldType.URL:
        parts = urlsplit(text if "://" in text else f"https://{text}")
        if parts.scheme not in ("http", "https") or "." not in (parts.hostname or ""):
            raise FieldValueError(_("Enter a web address, for example https://example.com."))
        return parts.geturl()
    raise FieldValueError(_("Unknown field type."))


@lru_cache(maxsize=4096)
def format_phone(value: str | None) -> str:
    """E.164 as a person reads it: '+48601234567' -> '+48 601 234 567'."""
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def as_text(value: Any) -> str:
    """A stored value as plain text that parse_value accepts again (for type changes)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def display(field: CustomField, value: Any) -> str:
    """A stored value as a person reads it, in their locale (the list calls this for
    every cell, so the locale and catalogue come from the per-request cache)."""
    kind = field.type
    if kind == FieldType.CHECKBOX:
        return l10n.gettext("Yes") if value else l10n.gettext("No")
    if value is None or value == "" or value == []:
        return ""
    if kind == FieldType.NUMBER:
        return l10n.format_decimal(value)
    if kind == FieldType.DATE:
        try:
            return l10n.format_medium_date(date.fromisoformat(value))
        except (TypeError, ValueError):
            return str(value)
    if kind == FieldType.PHONE:
        return format_phone(value)
    if kind == FieldType.MULTI_CHOICE:
        return ", ".join(value) if isinstance(value, list) else str(value)
    return str(value)


def form_value(field: CustomField, value: Any) -> Any:
    """A stored value as an HTML input wants it."""
    if field.type == FieldType.MULTI_CHOICE:
        return value or []
    if field.type == FieldType.CHECKBOX:
        return bool(value)
    if field.type == FieldType.NUMBER and value is not None:
        return str(value)
    return "" if value is None else value
