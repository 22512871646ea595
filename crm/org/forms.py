from __future__ import annotations

import zoneinfo

import phonenumbers
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField, URLField
from wtforms.validators import URL, DataRequired, Email, Length, Optional

from crm import LANGUAGES
from crm.appointments.models import FeedDetail
from crm.consents.forms import BASIS_LABELS
from crm.consents.models import LegalBasis
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
    privacy_notice_url = URLField(
        _l("Privacy notice link"),
        description=_l(
            "Where the short information clauses on public pages (online booking) link "
            "to. Leave empty to use the notice generated from these settings and the "
            "register of purposes."
        ),
        validators=[Optional(), URL(require_tld=False), Length(max=500)],
    )
    calendar_feed_detail = SelectField(
        _l("Staff calendar feeds show"),
        description=_l(
            "Feeds are read by phones and calendar services outside the CRM: show as "
            "little about the client as your staff need."
        ),
        choices=options(
            [
                (FeedDetail.BOOKED.value, _l("Only “Booked” and the service")),
                (FeedDetail.FIRST_NAME.value, _l("The client's first name and the service")),
            ]
        ),
    )
    reminders_basis = SelectField(
        _l("Legal basis of appointment reminders"),
        description=_l(
            "Recorded on the “Appointment reminders” purpose in the consent ledger. "
            "With consent, reminders go only to clients who agreed; with a contract or "
            "a legitimate interest, to every client who has not objected."
        ),
        choices=options(
            (basis.value, BASIS_LABELS[basis.value])
            for basis in (LegalBasis.LEGITIMATE_INTEREST, LegalBasis.CONTRACT, LegalBasis.CONSENT)
        ),
    )

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        regions = sorted(phonenumbers.SUPPORTED_REGIONS)
        self.default_phone_region.choices = options((r, r) for r in regions)
        self.timezone.choices = options(_zones())
