from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from wtforms import DateField, Field, SelectField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, Length, Optional

from crm.auth.models import User
from crm.extensions import db
from crm.tasks.models import TaskOrigin
from crm.web.forms import option_values, options

MAX_DETAILS = 10_000

ORIGIN_LABELS = {
    TaskOrigin.MANUAL.value: _l("Manual"),
    TaskOrigin.CONSENT_EXPIRY.value: _l("Consent expiry"),
    TaskOrigin.RETENTION.value: _l("Retention review"),
    TaskOrigin.DATA_REQUEST.value: _l("Data request"),
}


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def user_choices(keep_id: int | None = None) -> list[tuple[str, str]]:
    """Active users by name, plus `keep_id` (a current assignee who was deactivated)."""
    condition = User.active.is_(True)
    if keep_id is not None:
        condition = or_(condition, User.id == keep_id)
    rows = db.session.execute(
        select(User.id, User.full_name, User.email)
        .where(condition)
        .order_by(User.full_name, User.email)
    )
    return [(str(uid), name or email) for uid, name, email in rows]


class TaskForm(FlaskForm):
    title = StringField(
        _l("Task"),
        validators=[DataRequired(message=_l("Say what needs doing.")), Length(max=200)],
        filters=[_strip],
        render_kw={"autocomplete": "off", "maxlength": 200},
    )
    details = TextAreaField(
        _l("Details"),
        validators=[Optional(), Length(max=MAX_DETAILS)],
        filters=[_strip],
        render_kw={"rows": 3},
    )
    assignee_id = SelectField(_l("Assigned to"), choices=[], validate_choice=False)
    due_date = DateField(_l("Due date"), validators=[Optional()])

    def __init__(self, *args: Any, keep_assignee: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assignee_id.choices = options(user_choices(keep_assignee))

    def validate_assignee_id(self, field: Field) -> None:
        if not field.data or field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a person from the list."))

    @property
    def assignee(self) -> int:
        return int(self.assignee_id.data)
