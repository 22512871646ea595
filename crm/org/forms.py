from __future__ import annotations

import zoneinfo

import phonenumbers
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, Optional

from crm import LANGUAGES
from crm.web.forms import options

CURRENCIES = ["PLN", "EUR", "CZK", "CHF", "GBP", "HUF", "USD"]
COMMON_ZONES = [
    "Europe/Warsaw",
    "Europe/Berlin",
    "Europe/Prague",
    "Europe/Vienna",
    "Europe/Bratislava",
    "Europe/Zurich",
    "Europe/London",
    "UTC",
]


def _zones() -> list[tuple[str, str]]:
    rest = sorted(z for z in zoneinfo.available_timezones() if "/" in z and z not in COMMON_ZONES)
    return [(z, z) for z in COMMON_ZONES + rest]


class OrganisationForm(FlaskForm):
    name = StringField(_l("Business name"), validators=[DataRequired(), Length(max=200)])
    legal_name = StringField(_l("Legal name"), validators=[Optional(), Length(max=200)])
    address = TextAreaField(
        _l("Address"), validators=[Optional(), Length(max=1000)], render_kw={"rows": 3}
    )
    privacy_contact = StringField(
        _l("Privacy contact email"), validators=[Optional(), Email(), Length(max=254)]
    )
    recipients = TextAreaField(
        _l("Recipients and processors"),
        description=_l(
            "One per line, e.g. “Hosting: Example Cloud GmbH, Frankfurt”. Named in the "
            "data export a client receives (GDPR Art. 15)."
        ),
        validators=[Optional(), Length(max=4000)],
        render_kw={"rows": 4},
    )
    default_phone_region = SelectField(
        _l("Default phone region"),
        description=_l("Phone numbers typed without a +country prefix are read as this country's."),
        choices=[],
        validate_choice=True,
    )
    timezone = SelectField(_l("Time zone"), choices=[])
    default_currency = SelectField(
        _l("Default currency"), choices=options((c, c) for c in CURRENCIES)
    )
    default_locale = SelectField(_l("Default language"), choices=options((c, c) for c in LANGUAGES))

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        regions = sorted(phonenumbers.SUPPORTED_REGIONS)
        self.default_phone_region.choices = options((r, r) for r in regions)
        self.timezone.choices = options(_zones())
