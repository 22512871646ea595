from __future__ import annotations

from typing import Any

from babel import Locale, UnknownLocaleError
from flask import g
from flask_babel import get_locale, get_translations
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    Field,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    ValidationError,
    widgets,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from crm.consents.models import Channel, EventKind, LegalBasis, Method, RetentionAction
from crm.consents.services import DEFAULT_VALIDITY_MONTHS, DEFAULT_WARNING_DAYS
from crm.web.forms import options


def N_(message: str) -> str:
    """Marks text for the catalogue without translating it here (`N_` is one of Babel's
    default extraction keywords)."""
    return message


# The labels as message ids: translated per use (forms: lazily; pages: once per request
# through `display_labels`, since lazy strings look the catalogue up on every use).
LABEL_TEXTS: dict[str, dict[str, str]] = {
    "basis": {
        LegalBasis.CONSENT.value: N_("Consent — Art. 6(1)(a)"),
        LegalBasis.CONTRACT.value: N_("Contract — Art. 6(1)(b)"),
        LegalBasis.LEGAL_OBLIGATION.value: N_("Legal obligation — Art. 6(1)(c)"),
        LegalBasis.VITAL_INTERESTS.value: N_("Vital interests — Art. 6(1)(d)"),
        LegalBasis.PUBLIC_TASK.value: N_("Public task — Art. 6(1)(e)"),
        LegalBasis.LEGITIMATE_INTEREST.value: N_("Legitimate interest — Art. 6(1)(f)"),
    },
    "action": {
        RetentionAction.REVIEW.value: N_("Review task for the client's owner"),
        RetentionAction.ANONYMISE.value: N_("Anonymise automatically"),
    },
    "channel": {
        Channel.EMAIL.value: N_("Email"),
        Channel.SMS.value: N_("SMS"),
        Channel.PHONE.value: N_("Phone call"),
        Channel.POST.value: N_("Post"),
    },
    "kind": {
        EventKind.GIVEN.value: N_("Given"),
        EventKind.RENEWED.value: N_("Renewed"),
        EventKind.REFUSED.value: N_("Refused"),
        EventKind.WITHDRAWN.value: N_("Withdrawn"),
        EventKind.EXPIRED.value: N_("Expired"),
        EventKind.INVALIDATED.value: N_("Invalidated"),
    },
    "method": {
        Method.PHONE.value: N_("By phone"),
        Method.IN_PERSON.value: N_("In person"),
        Method.EMAIL.value: N_("By email"),
        Method.WEB_FORM.value: N_("Web form"),
        Method.DOUBLE_OPT_IN.value: N_("Double opt-in"),
        Method.IMPORT.value: N_("Import"),
        Method.STAFF.value: N_("Recorded by staff"),
        Method.SYSTEM.value: N_("By the CRM"),
    },
}
# A state reads like the event that left it (a renewal leaves it "given").
LABEL_TEXTS["status"] = {
    k: v for k, v in LABEL_TEXTS["kind"].items() if k != EventKind.RENEWED.value
}


def _lazy(name: str) -> dict[str, Any]:
    return {key: _l(text) for key, text in LABEL_TEXTS[name].items()}


BASIS_LABELS = _lazy("basis")
ACTION_LABELS = _lazy("action")
CHANNEL_LABELS = _lazy("channel")
KIND_LABELS = _lazy("kind")
METHOD_LABELS = _lazy("method")


def display_labels() -> dict[str, dict[str, str]]:
    """Every label in the reader's language, translated once per request."""
    cached = g.get("_consent_labels")
    if cached is None:
        translations = get_translations()
        cached = g._consent_labels = {
            name: {key: translations.ugettext(text) for key, text in texts.items()}
            for name, texts in LABEL_TEXTS.items()
        }
    return cached


# What staff may record on a card (expiry is the CRM's own; withdrawal has its button).
RECORD_KINDS = [
    EventKind.GIVEN.value,
    EventKind.RENEWED.value,
    EventKind.REFUSED.value,
    EventKind.INVALIDATED.value,
]
RECORD_METHODS = [m.value for m in Method if m != Method.SYSTEM]


def language_name(code: str) -> str:
    """'pl' -> 'Polish' in the reader's language ('polski' for a Polish reader)."""
    try:
        name = Locale.parse(code).get_display_name(get_locale() or "en")
    except (UnknownLocaleError, ValueError):
        return code
    return (name or code)[:1].upper() + (name or code)[1:]


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class PurposeForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    key = StringField(
        _l("Key"),
        validators=[
            Optional(),
            Length(max=48),
            Regexp(r"^[a-z0-9_]+$", message=_l("Lower-case letters, digits and _ only.")),
        ],
        description=_l("How code names this purpose, e.g. newsletter. Fixed once saved."),
    )
    description = TextAreaField(
        _l("Description"), validators=[Length(max=5000)], render_kw={"rows": 2}
    )
    legal_basis = SelectField(_l("Legal basis"), choices=options(BASIS_LABELS.items()))
    legitimate_interest = TextAreaField(
        _l("Legitimate interest pursued"),
        validators=[Length(max=5000)],
        description=_l("Only for legitimate interest: which interest, and why it outweighs."),
        render_kw={"rows": 2},
    )
    data_categories = TextAreaField(
        _l("Categories of personal data"),
        validators=[DataRequired(), Length(max=5000)],
        description=_l("E.g. name, email address, appointment history."),
        render_kw={"rows": 2},
    )
    recipients = TextAreaField(
        _l("Recipients and processors"),
        validators=[Length(max=5000)],
        description=_l("Who else receives the data (e.g. the email service), or “none”."),
        render_kw={"rows": 2},
    )
    channels = MultiCheckboxField(
        _l("Contact channels"),
        choices=options(CHANNEL_LABELS.items()),
        description=_l("The ways this purpose may contact a client."),
    )
    retention_months = IntegerField(
        _l("Retention period (months)"),
        validators=[
            DataRequired(message=_l("A retention period is required: there is no “forever”.")),
            NumberRange(min=1, max=1200),
        ],
        description=_l("How long data is kept after the purpose ended for a client."),
    )
    retention_action = SelectField(
        _l("When the retention period is over"), choices=options(ACTION_LABELS.items())
    )
    validity_months = IntegerField(
        _l("Consent valid for (months)"),
        default=DEFAULT_VALIDITY_MONTHS,
        validators=[Optional(), NumberRange(min=1, max=120)],
        description=_l("Consent must be renewed after this. Leave empty for other bases."),
    )
    warning_days = IntegerField(
        _l("Warn this many days before expiry"),
        default=DEFAULT_WARNING_DAYS,
        validators=[DataRequired(), NumberRange(min=1, max=365)],
    )

    def validate_legitimate_interest(self, field: Field) -> None:
        if (
            self.legal_basis.data == LegalBasis.LEGITIMATE_INTEREST.value
            and not (field.data or "").strip()
        ):
            raise ValidationError(_l("Name the legitimate interest pursued."))

    def validate_validity_months(self, field: Field) -> None:
        if self.legal_basis.data == LegalBasis.CONSENT.value and not field.data:
            raise ValidationError(_l("Consent needs a validity period."))

    def notice_fields(self) -> list[Field]:
        return [f for f in self if f.name.startswith("notice_")]

    def notice_texts(self) -> dict[str, str]:
        return {f.name.removeprefix("notice_"): f.data or "" for f in self.notice_fields()}


def purpose_form(languages: list[str], **kwargs: Any) -> PurposeForm:
    """The purpose form with one notice text area per organisation language."""

    class Form(PurposeForm):
        pass

    for code in languages:
        setattr(
            Form,
            f"notice_{code}",
            TextAreaField(
                _l("Notice (%(language)s)", language=language_name(code)),
                validators=[Length(max=20_000)],
                render_kw={"rows": 6},
            ),
        )
    return Form(**kwargs)


class RecordForm(FlaskForm):
    purpose_id = SelectField(_l("Purpose"), choices=[], validate_choice=True)
    kind = SelectField(
        _l("What happened"),
        choices=options((k, KIND_LABELS[k]) for k in RECORD_KINDS),
        default=EventKind.GIVEN.value,
    )
    method = SelectField(
        _l("How"),
        choices=options((m, METHOD_LABELS[m]) for m in RECORD_METHODS),
        default=Method.PHONE.value,
    )
    notice_id = SelectField(_l("Notice text the client was given"), choices=[])
    note = StringField(
        _l("Note"),
        validators=[Length(max=500)],
        description=_l("Optional: e.g. the phone number called, or who was present."),
    )


class ConfirmForm(FlaskForm):
    """Only the CSRF token: withdrawal, archive, a renewal request or answer."""
