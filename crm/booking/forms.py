"""The public booking form: only the client data the chosen service asks for
(data minimisation), the optional consent boxes, and a honeypot field.

The form class is built per request from `Service.required_data`, so a field the
service does not need is not merely hidden: it does not exist, and anything posted
under its name is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length, Optional

from crm.appointments.models import ClientDatum
from crm.clients.forms import ContactValidation

# The honeypot's name: a plausible field a form filler completes, a person never sees.
HONEYPOT = "website"

# Form fields per requested datum, in the order they are shown.
DATUM_FIELDS: dict[str, tuple[str, ...]] = {
    ClientDatum.NAME.value: ("first_name", "last_name"),
    ClientDatum.EMAIL.value: ("email",),
    ClientDatum.PHONE.value: ("phone",),
    ClientDatum.ADDRESS.value: ("street", "postal_code", "city"),
}


def _required() -> list[Any]:
    return [DataRequired(message=_l("This field is required."))]


def _email_field() -> StringField:
    return StringField(
        _l("Email"),
        validators=[*_required(), Length(max=254)],
        render_kw={"type": "email", "inputmode": "email", "autocomplete": "email"},
    )


def _phone_field() -> StringField:
    return StringField(
        _l("Phone"),
        validators=[*_required(), Length(max=32)],
        render_kw={"type": "tel", "inputmode": "tel", "autocomplete": "tel"},
    )


def _text(label: Any, max_length: int, autocomplete: str) -> StringField:
    return StringField(
        label,
        validators=[*_required(), Length(max=max_length)],
        render_kw={"autocomplete": autocomplete},
    )


class _DetailsBase(ContactValidation, FlaskForm):
    """The fields every booking form has; the rest are added by `details_form`."""

    # Visually hidden, out of the tab order, never autofilled: only a bot fills it.
    website = StringField(
        _l("Leave this field empty"),
        validators=[Optional(), Length(max=500)],
        render_kw={"autocomplete": "off", "tabindex": "-1"},
    )

    @property
    def is_bot(self) -> bool:
        return bool((self.website.data or "").strip())

    def values(self) -> dict[str, str]:
        """The client data given, by Client attribute name, trimmed."""
        return {
            name: " ".join((self[name].data or "").split())
            for names in DATUM_FIELDS.values()
            for name in names
            if name in self
        }


def data_fields(required: Iterable[str]) -> list[str]:
    """The form field names for a service's required data, in display order."""
    wanted = set(required or [])
    return [name for datum, names in DATUM_FIELDS.items() if datum in wanted for name in names]


def details_form(
    required: Iterable[str],
    *,
    phone_region: str,
    marketing_label: str | None,
    reminders_consent: bool,
    formdata: Any = None,
) -> _DetailsBase:
    """A form with exactly the fields the service requires, plus the marketing box
    (when a marketing purpose exists) and the reminders box (when reminders rest on
    consent). Both boxes start unticked and are never required."""
    wanted = set(required or [])
    attrs: dict[str, Any] = {"phone_region": phone_region or "PL"}
    if ClientDatum.NAME.value in wanted:
        attrs["first_name"] = _text(_l("First name"), 100, "given-name")
        attrs["last_name"] = _text(_l("Last name"), 100, "family-name")
    if ClientDatum.EMAIL.value in wanted:
        attrs["email"] = _email_field()
    if ClientDatum.PHONE.value in wanted:
        attrs["phone"] = _phone_field()
    if ClientDatum.ADDRESS.value in wanted:
        attrs["street"] = _text(_l("Street and number"), 200, "street-address")
        attrs["postal_code"] = _text(_l("Postal code"), 20, "postal-code")
        attrs["city"] = _text(_l("City"), 100, "address-level2")
    if marketing_label:
        attrs["marketing"] = BooleanField(marketing_label, default=False)
    if reminders_consent:
        attrs["reminders"] = BooleanField(_l("Send me reminders about this appointment"))
    form_class = type("BookingDetailsForm", (_DetailsBase,), attrs)
    return form_class(formdata=formdata) if formdata is not None else form_class()
