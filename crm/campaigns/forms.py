"""Forms of the campaign pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from wtforms import (
    DateTimeLocalField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, InputRequired, Length, Optional

from crm.auth.models import User
from crm.campaigns.models import BodyFormat
from crm.campaigns.services import CampaignSpec
from crm.extensions import db
from crm.mailing.models import MailingList
from crm.search.models import SavedFilter
from crm.web.forms import options

FORMAT_TEXTS = {
    BodyFormat.MARKDOWN.value: _l("Markdown"),
    BodyFormat.HTML.value: _l("HTML"),
}


def _optional_int(value: Any) -> int | None:
    if value in (None, "", "None"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class CampaignForm(FlaskForm):
    name = StringField(
        _l("Internal name"),
        validators=[Length(max=200)],
        description=_l("For staff only; the subject is what recipients see."),
    )
    subject = StringField(_l("Subject"), validators=[DataRequired(), Length(max=255)])
    sender_name = StringField(_l("Sender name"), validators=[Length(max=120)])
    sender_email = StringField(
        _l("Sender address"), validators=[DataRequired(), Email(), Length(max=254)]
    )
    body_format = SelectField(_l("Format"))
    body = TextAreaField(
        _l("Message"),
        validators=[DataRequired(), Length(max=200_000)],
        description=_l(
            "Variables: {{ first_name }}, {{ last_name }}, {{ email }}, {{ unsubscribe_url }}."
            " An unsubscribe link is added to every message."
        ),
    )
    list_ids = SelectMultipleField(_l("Lists"), coerce=int, validators=[InputRequired()])
    saved_filter_id = SelectField(
        _l("Only clients matching the saved filter"), coerce=_optional_int, validators=[Optional()]
    )

    def fill_choices(self, user: User) -> None:
        self.body_format.choices = options(FORMAT_TEXTS.items())
        lists = db.session.scalars(
            select(MailingList).where(MailingList.archived_at.is_(None)).order_by(MailingList.name)
        )
        self.list_ids.choices = options((m.id, m.name) for m in lists)
        filters = db.session.scalars(
            select(SavedFilter)
            .where(or_(SavedFilter.owner_id == user.id, SavedFilter.shared.is_(True)))
            .order_by(SavedFilter.name)
        )
        self.saved_filter_id.choices = options([(None, "—")] + [(f.id, f.name) for f in filters])

    def spec(self) -> CampaignSpec:
        return CampaignSpec(
            name=self.name.data or "",
            subject=self.subject.data or "",
            sender_name=self.sender_name.data or "",
            sender_email=self.sender_email.data or "",
            body=self.body.data or "",
            body_format=self.body_format.data or BodyFormat.MARKDOWN.value,
            list_ids=list(self.list_ids.data or []),
            saved_filter_id=self.saved_filter_id.data,
        )


class TestSendForm(FlaskForm):
    to = StringField(_l("Send a test to"), validators=[DataRequired(), Email(), Length(max=254)])


class ScheduleForm(FlaskForm):
    scheduled_at = DateTimeLocalField(
        _l("Send at"), format="%Y-%m-%dT%H:%M", validators=[DataRequired()]
    )

    def utc(self, timezone: str) -> datetime:
        """The entered wall-clock time, in the organisation's zone, as UTC."""
        try:
            zone: Any = ZoneInfo(timezone)
        except (ValueError, KeyError):
            zone = UTC
        value: datetime = self.scheduled_at.data
        return value.replace(tzinfo=zone).astimezone(UTC)


class ActionForm(FlaskForm):
    """A button that changes state: CSRF only."""
