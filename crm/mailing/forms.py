"""Forms of the list admin pages, the card's list section and the CSV import."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import select
from wtforms import SelectField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, Length

from crm.consents.forms import N_
from crm.consents.models import ConsentPurpose, LegalBasis, Method
from crm.extensions import db
from crm.mailing.models import ListGroup, OptIn, SubscriptionStatus
from crm.web.forms import option_values, options

STATUS_TEXTS = {
    SubscriptionStatus.UNCONFIRMED.value: N_("Awaiting confirmation"),
    SubscriptionStatus.CONFIRMED.value: N_("Subscribed"),
    SubscriptionStatus.UNSUBSCRIBED.value: N_("Unsubscribed"),
}
OPT_IN_TEXTS = {
    OptIn.SINGLE.value: N_("Single opt-in"),
    OptIn.DOUBLE.value: N_("Double opt-in (confirmation email)"),
}
# Import methods: how the clients in the file agreed (the ledger's method).
IMPORT_METHODS = (Method.IMPORT, Method.WEB_FORM, Method.IN_PERSON, Method.PHONE, Method.EMAIL)


class GroupForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    description = TextAreaField(
        _l("Description"),
        validators=[Length(max=2000)],
        description=_l("For staff: what the lists of this group have in common."),
    )


class ListForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    description = TextAreaField(
        _l("Public description"),
        validators=[Length(max=2000)],
        description=_l("Shown to subscribers: what they receive and how often."),
    )
    group_id = SelectField(
        _l("Group"), description=_l("Subscribers can switch between the lists of a group.")
    )
    opt_in = SelectField(_l("Opt-in"))
    purpose_id = SelectField(
        _l("Purpose"),
        description=_l("Subscribing records consent for this purpose in the consent ledger."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        groups = db.session.scalars(
            select(ListGroup).where(ListGroup.archived_at.is_(None)).order_by(ListGroup.name)
        )
        self.group_id.choices = options(
            [("", _l("No group"))] + [(str(g.id), g.name) for g in groups]
        )
        self.opt_in.choices = options((k, _l(v)) for k, v in OPT_IN_TEXTS.items())
        purposes = db.session.scalars(
            select(ConsentPurpose)
            .where(ConsentPurpose.archived_at.is_(None))
            .order_by(ConsentPurpose.name)
        )
        self.purpose_id.choices = options(
            [("", _l("Choose…"))]
            + [(str(p.id), p.name) for p in purposes if "email" in (p.channels or [])]
        )

    def validate_group_id(self, field: Any) -> None:
        if field.data and field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a group from the list."))

    def validate_purpose_id(self, field: Any) -> None:
        if not field.data or field.data not in option_values(field.choices):
            raise ValidationError(_l("Choose the purpose subscribers consent to."))


class SubscribeForm(FlaskForm):
    list_id = SelectField(_l("List"))


class ImportUploadForm(FlaskForm):
    file = FileField(
        _l("CSV file"),
        validators=[FileRequired(_l("Choose a CSV file."))],
        render_kw={"accept": ".csv,text/csv"},
    )


BASIS_NAMES = {basis.name.lower(): basis for basis in LegalBasis}


class ImportMappingForm(FlaskForm):
    """The second step: which list, on what basis, and the column mapping (read from
    the form by name: map_<column index>)."""

    upload = StringField(validators=[DataRequired()])
    list_name = StringField(
        _l("List"),
        validators=[DataRequired(), Length(max=120)],
        description=_l("An existing list, or the name of a new one."),
        render_kw={"list": "import-lists"},
    )
    basis = SelectField(_l("Legal basis"))
    method = SelectField(_l("How the clients agreed"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from crm.consents.forms import LABEL_TEXTS

        self.basis.choices = options(
            (name, _l(LABEL_TEXTS["basis"][basis.value])) for name, basis in BASIS_NAMES.items()
        )
        self.method.choices = options(
            (m.value, _l(LABEL_TEXTS["method"][m.value])) for m in IMPORT_METHODS
        )
