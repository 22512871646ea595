"""Per-request localisation: the cached locale follows force_locale, dates show the
organisation's day, numbers and catalogue lookups match flask-babel's own."""

from __future__ import annotations

from datetime import UTC, date, datetime

import flask_babel
from flask import Flask

from crm import l10n


def test_the_cache_follows_force_locale(app: Flask) -> None:
    with app.test_request_context("/", headers={"Accept-Language": "de"}):
        assert str(l10n.localised().locale) == "de"
        assert l10n.format_decimal(1234.5) == "1.234,5"
        with flask_babel.force_locale("pl"):
            assert str(l10n.localised().locale) == "pl"
            assert l10n.format_decimal(1234.5) == "1\u00a0234,5"
            assert l10n.format_medium_date(date(2026, 3, 4)) == "4 mar 2026"
        assert str(l10n.localised().locale) == "de"
        assert l10n.format_medium_date(date(2026, 3, 4)) == "04.03.2026"


def test_same_text_as_flask_babel(app: Flask) -> None:
    for language in ("en", "pl", "de", "cs"):
        with app.test_request_context("/", headers={"Accept-Language": language}):
            assert l10n.gettext("Yes") == flask_babel.gettext("Yes")
            assert l10n.gettext("%(n)s KB", n="3") == flask_babel.gettext("%(n)s KB", n="3")
            assert l10n.format_decimal(1234567.891) == flask_babel.format_decimal(1234567.891)
            day = date(2026, 1, 31)
            assert l10n.format_medium_date(day) == flask_babel.format_date(day)


def test_a_late_utc_instant_shows_the_next_day_in_the_organisations_zone(app: Flask) -> None:
    late = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 February in Warsaw
    with app.test_request_context("/", headers={"Accept-Language": "pl"}):
        assert str(l10n.localised().zone) == "Europe/Warsaw"
        assert l10n.format_medium_date(late) == "1 lut 2026"
        assert l10n.format_date_time(late) == "1 lut 2026, 00:30"
        naive = late.replace(tzinfo=None)  # SQLite hands back naive UTC values
        assert l10n.format_date_time(naive) == "1 lut 2026, 00:30"
