"""Client forms: fixed core fields plus one WTForms field per custom field, built per
request from the field definitions. The same form, cut down to a few fields, serves
the card's inline editors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from babel import Locale
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    BooleanField,
    Field,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    ValidationError,
)
from wtforms.validators import Length
from wtforms.widgets import CheckboxInput, ListWidget

from crm.auth.models import User
from crm.extensions import db
from crm.fields.models import CustomField, FieldType
from crm.fields.values import FieldValueError, parse_email, parse_phone, parse_value
from crm.web.forms import option_values, options

# Inline-edit groups on the card: which core inputs each one edits.
CORE_GROUPS: dict[str, tuple[str, ...]] = {
    "name": ("first_name", "last_name", "company"),
    "email": ("email",),
    "phone": ("phone",),
    "address": ("street", "postal_code", "city", "country"),
    "owner": ("owner_id",),
    "tags": ("tags",),
}
CORE_INPUTS = tuple(name for names in CORE_GROUPS.values() for name in names)


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def country_choices() -> list[SelectChoice]:
    locale = get_locale() or Locale("en")
    names = locale.territories
    codes = [
        "PL",
        "DE",
        "CZ",
        "AT",
        "SK",
        "FR",
        "NL",
        "IT",
        "ES",
        "GB",
        "UA",
        "LT",
        "HU",
        "DK",
        "SE",
        "BE",
        "CH",
    ]
    return options([("", "—"), *((c, names.get(c, c)) for c in codes)])


class ContactValidation:
    """Email and phone fields checked and normalised the way client records store them
    (phone numbers to E.164, read in `phone_region` when typed without a prefix). A
    mixin for every form that takes a client's contact details."""

    phone_region = "PL"

    def validate_email(self, field: Field) -> None:
        if field.data and field.data.strip():
            try:
                field.data = parse_email(field.data.strip())
            except FieldValueError as exc:
                raise ValidationError(str(exc)) from None

    def validate_phone(self, field: Field) -> None:
        if field.data and field.data.strip():
            try:
                field.data = parse_phone(field.data.strip(), self.phone_region)
            except FieldValueError as exc:
                raise ValidationError(str(exc)) from None


class ClientCoreForm(ContactValidation, FlaskForm):
    first_name = StringField(
        _l("First name"), validators=[Length(max=100)], render_kw={"autocomplete": "off"}
    )
    last_name = StringField(
        _l("Last name"), validators=[Length(max=100)], render_kw={"autocomplete": "off"}
    )
    company = StringField(_l("Company"), validators=[Length(max=200)])
    email = StringField(
        _l("Email"), validators=[Length(max=254)], render_kw={"type": "email", "inputmode": "email"}
    )
    phone = StringField(
        _l("Phone"), validators=[Length(max=40)], render_kw={"type": "tel", "inputmode": "tel"}
    )
    street = StringField(_l("Street"), validators=[Length(max=200)])
    postal_code = StringField(_l("Postal code"), validators=[Length(max=20)])
    city = StringField(_l("City"), validators=[Length(max=100)])
    country = SelectField(_l("Country"), choices=[], validate_choice=False)
    owner_id = SelectField(_l("Owner"), choices=[], coerce=str, validate_choice=False)
    tags = StringField(
        _l("Tags"), description=_l("Separate tags with commas."), validators=[Length(max=500)]
    )

    custom_fields: Sequence[CustomField] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsed_custom: dict[str, Any] = {}
        if "country" in self:
            self.country.choices = country_choices()
        if "owner_id" in self:
            users = db.session.execute(
                select(User.id, User.full_name, User.email)
                .where(User.active.is_(True))
                .order_by(User.full_name, User.email)
            )
            self.owner_id.choices = options(
                [("", _l("Nobody"))] + [(str(uid), name or email) for uid, name, email in users]
            )

    def validate_owner_id(self, field: Field) -> None:
        if field.data and field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a user from the list."))

    def validate_country(self, field: Field) -> None:
        if field.data and field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a country from the list."))

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        names = {"first_name", "last_name", "company"}
        if names <= set(self._fields) and not any((self[n].data or "").strip() for n in names):
            self.last_name.errors = [*self.last_name.errors, _l("Enter a name or a company.")]
            ok = False
        for custom in self.custom_fields:
            name = f"cf_{custom.key}"
            if name not in self:
                continue
            value = self[name].data
            try:
                parsed = parse_value(custom, value, self.phone_region)
            except FieldValueError as exc:
                self[name].errors = [*self[name].errors, str(exc)]
                ok = False
                continue
            if custom.required and (parsed is None or parsed == []):
                self[name].errors = [*self[name].errors, _l("This field is required.")]
                ok = False
                continue
            self.parsed_custom[custom.key] = parsed
        return ok


def _custom_input(field: CustomField) -> Field:
    label = field.label
    kw: dict[str, Any] = {"description": field.help_text or ""}
    kind = field.type
    if kind == FieldType.LONG_TEXT:
        return TextAreaField(label, render_kw={"rows": 3}, **kw)
    if kind == FieldType.CHECKBOX:
        return BooleanField(label, false_values=("", "0", "false", "n"), **kw)
    if kind == FieldType.SINGLE_CHOICE:
        return SelectField(
            label,
            choices=options([("", "—")] + [(c, c) for c in field.choices]),
            validate_choice=False,
            **kw,
        )
    if kind == FieldType.MULTI_CHOICE:
        return MultiCheckboxField(
            label, choices=options((c, c) for c in field.choices), validate_choice=False, **kw
        )
    render_kw = {
        FieldType.NUMBER: {"inputmode": "decimal"},
        FieldType.DATE: {"type": "date"},
        FieldType.EMAIL: {"type": "email", "inputmode": "email"},
        FieldType.PHONE: {"type": "tel", "inputmode": "tel"},
        FieldType.URL: {"type": "url", "inputmode": "url"},
    }.get(kind, {})
    return StringField(label, render_kw=render_kw, **kw)


def client_form(
    custom_fields: Sequence[CustomField],
    phone_region: str,
    only: Sequence[str] | None = None,
    **kwargs: Any,
) -> ClientCoreForm:
    """A form for the whole client, or for the inputs named in `only`."""
    wanted = [f for f in custom_fields if only is None or f"cf_{f.key}" in only]
    attrs: dict[str, Any] = {f"cf_{f.key}": _custom_input(f) for f in wanted}
    attrs["custom_fields"] = wanted
    attrs["phone_region"] = phone_region
    form_class = type("ClientForm", (ClientCoreForm,), attrs)
    form = form_class(**kwargs)
    if only is not None:
        for name in list(form._fields):
            if name not in only and name != "csrf_token":
                del form[name]
    return form
