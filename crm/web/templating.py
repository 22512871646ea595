"""Jinja filters: dates in the organisation's time zone, numbers and money in the
user's locale, so the same value reads '1 234,50 zł' in Polish and '1,234.50' in English."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from babel import dates, support
from flask import Flask, g
from flask_babel import (
    format_currency,
    format_date,
    format_datetime,
    format_decimal,
    get_locale,
    get_timezone,
    get_translations,
)
from flask_babel import gettext as _

from crm import LANGUAGES
from crm.auth.permissions import Permission
from crm.fields.values import format_phone


def _datetime(value: datetime | None, fmt: str | None = None) -> str:
    """Date and time in the organisation's zone; by default '31 May 2026, 13:21' in the
    reader's locale (medium date, short time: seconds are noise on a card)."""
    if not value:
        return ""
    if fmt:
        return format_datetime(value, fmt)
    locale, zone = _locale_and_zone()
    local = value.astimezone(zone)
    return f"{dates.format_date(local, 'medium', locale=locale)}, " + dates.format_time(
        local, "short", locale=locale
    )


def _locale_and_zone() -> tuple[Any, Any]:
    """The reader's locale and the organisation's zone, looked up once per request
    (flask-babel's own helpers look both up on every call)."""
    cached = g.get("_crm_locale_zone")
    if cached is None:
        cached = g._crm_locale_zone = (get_locale(), get_timezone())
    return cached


def _translations() -> support.NullTranslations:
    """The request's catalogue, looked up once: flask-babel resolves the context, domain
    and locale again on every call, and a card renders some 140 strings."""
    cached = g.get("_crm_translations")
    if cached is None:
        cached = g._crm_translations = get_translations()
    return cached


def _template_gettext(message: str) -> str:
    return _translations().ugettext(message)


def _template_ngettext(singular: str, plural: str, n: int) -> str:
    return _translations().ungettext(singular, plural, n)


def _template_pgettext(context: str, message: str) -> str:
    return _translations().upgettext(context, message)


def _template_npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return _translations().unpgettext(context, singular, plural, n)


def _date(value: date | None, fmt: str = "medium") -> str:
    return format_date(value, fmt) if value else ""


def _number(value: Any) -> str:
    if value is None or value == "":
        return ""
    return format_decimal(value)


def _money(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return ""
    text = format_currency(amount, currency)
    # English puts a letter code flush against the digits ("PLN19,855.00"): space it.
    if text[:3].isalpha() and len(text) > 3 and not text[3].isspace():
        text = f"{text[:3]}\u00a0{text[3:]}"
    return text


def _filesize(size: int) -> str:
    if size < 1024:
        return _("%(n)s B", n=size)
    if size < 1024 * 1024:
        return _("%(n)s KB", n=format_decimal(round(size / 1024, 1)))
    return _("%(n)s MB", n=format_decimal(round(size / (1024 * 1024), 1)))


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        dt=_datetime, d=_date, number=_number, money=_money, filesize=_filesize, phone=format_phone
    )
    # The same callables flask-babel installs (newstyle: %-formatting and escaping by
    # Jinja), with the catalogue cached per request.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_template_gettext,
        ngettext=_template_ngettext,
        pgettext=_template_pgettext,
        npgettext=_template_npgettext,
        newstyle=True,
    )
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, Permission=Permission, get_locale=get_locale)

    @app.context_processor
    def _org() -> dict[str, Any]:
        from crm.org.services import organisation

        return {"org_name": organisation().name}

    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
