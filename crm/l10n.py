"""Localisation looked up once per request: the reader's locale, the organisation's
zone, the message catalogue and the date patterns.

flask-babel resolves the context, the domain, the locale and the catalogue again on
every `gettext`, `format_date` or `format_decimal` call; a card or a list page makes a
few hundred of those. The cache lives in `g` and is keyed by the locale in force, so
`flask_babel.force_locale` (emails in the recipient's language) gets its own entry.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from babel import Locale, dates, numbers, support
from flask import g
from flask_babel import get_locale, get_timezone, get_translations

_FALLBACK = Locale.parse("en")


class Localised(NamedTuple):
    locale: Locale
    zone: Any
    translations: support.NullTranslations
    medium_date: dates.DateTimePattern
    short_time: dates.DateTimePattern


def localised() -> Localised:
    """What formatting and translating need, for the locale now in force.

    flask-babel keeps one Locale object per request (and a new one inside
    `force_locale`), so comparing identities is enough to notice a switch."""
    locale = get_locale() or _FALLBACK
    cached: Localised | None = g.get("_crm_l10n")
    if cached is not None and cached.locale is locale:
        return cached
    entry = Localised(
        locale,
        get_timezone(),
        get_translations(),
        locale.date_formats["medium"],
        locale.time_formats["short"],
    )
    g._crm_l10n = entry
    return entry


def gettext(message: str, **variables: Any) -> str:
    """flask_babel.gettext with the catalogue looked up once per request."""
    translated = localised().translations.ugettext(message)
    return translated % variables if variables else translated


def local_time(value: datetime, zone: Any) -> datetime:
    """The instant in the organisation's zone (a naive value is UTC, as stored)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone)


def format_medium_date(value: date | datetime) -> str:
    """'31 May 2026' in the reader's locale; a datetime shows its day in the
    organisation's zone (23:30 UTC on the 1st is already the 2nd in Warsaw)."""
    here = localised()
    if isinstance(value, datetime):
        value = local_time(value, here.zone).date()
    return here.medium_date.apply(value, here.locale)


def format_date_time(value: datetime) -> str:
    """'31 May 2026, 13:21' in the reader's locale and the organisation's zone."""
    here = localised()
    local = local_time(value, here.zone)
    day = here.medium_date.apply(local, here.locale)
    return f"{day}, {here.short_time.apply(local, here.locale)}"


def format_decimal(value: int | float | Decimal | str) -> str:
    """A number in the reader's locale ('1 234,5' in Polish)."""
    return numbers.format_decimal(value, locale=localised().locale)
