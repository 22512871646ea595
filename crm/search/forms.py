"""Forms of the search domain: saving and renaming filters, and the inputs of the mass
actions' confirmations."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, Field, HiddenField, SelectField, StringField, ValidationError
from wtforms.validators import DataRequired, Length

from crm.auth.models import User
from crm.clients.models import Tag
from crm.extensions import db
from crm.web.forms import option_values, options


class SaveFilterForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])
    shared = BooleanField(_l("Share with everyone"))
    # The search being saved, as the list shows it.
    q = HiddenField()
    sort = HiddenField()
    dir = HiddenField()
    columns = HiddenField()


class RenameFilterForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])


class ShareFilterForm(FlaskForm):
    shared = HiddenField()


class DeleteFilterForm(FlaskForm):
    """The confirmation's POST: only its CSRF token."""


class AddTagForm(FlaskForm):
    tag = StringField(
        _l("Tag"),
        validators=[DataRequired(), Length(max=64)],
        description=_l("An existing tag or a new one."),
    )

    def validate_tag(self, field: Field) -> None:
        field.data = " ".join((field.data or "").split())
        if not field.data:
            raise ValidationError(_l("Enter a tag."))


class RemoveTagForm(FlaskForm):
    tag = SelectField(_l("Tag"), choices=[], validate_choice=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tags = db.session.execute(select(Tag.id, Tag.name).order_by(Tag.name))
        self.tag.choices = options([("", _l("Choose a tag…"))] + [(str(i), n) for i, n in tags])

    def validate_tag(self, field: Field) -> None:
        if not field.data or field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a tag from the list."))


class AssignOwnerForm(FlaskForm):
    owner = SelectField(_l("New owner"), choices=[], validate_choice=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        users = db.session.execute(
            select(User.id, User.full_name, User.email)
            .where(User.active.is_(True))
            .order_by(User.full_name, User.email)
        )
        self.owner.choices = options(
            [("", _l("Nobody"))] + [(str(uid), name or email) for uid, name, email in users]
        )

    def validate_owner(self, field: Field) -> None:
        if field.data and field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a user from the list."))
