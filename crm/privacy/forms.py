"""Forms of the request register: the request itself, an extension, closing."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, Field, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.extensions import db
from crm.privacy.models import RequestChannel, RequestKind, RequestStatus
from crm.tasks.forms import user_choices
from crm.web.forms import option_values, options

MAX_TEXT = 10_000

KIND_LABELS = {
    RequestKind.ACCESS.value: _l("Access (Art. 15)"),
    RequestKind.PORTABILITY.value: _l("Portability (Art. 20)"),
    RequestKind.RECTIFICATION.value: _l("Rectification (Art. 16)"),
    RequestKind.ERASURE.value: _l("Erasure (Art. 17)"),
    RequestKind.RESTRICTION.value: _l("Restriction (Art. 18)"),
    RequestKind.OBJECTION.value: _l("Objection (Art. 21)"),
}

# The kind as a word inside a sentence (task titles, emails).
KIND_NAMES = {
    RequestKind.ACCESS.value: _l("access"),
    RequestKind.PORTABILITY.value: _l("portability"),
    RequestKind.RECTIFICATION.value: _l("rectification"),
    RequestKind.ERASURE.value: _l("erasure"),
    RequestKind.RESTRICTION.value: _l("restriction"),
    RequestKind.OBJECTION.value: _l("objection"),
}

CHANNEL_LABELS = {
    RequestChannel.EMAIL.value: _l("Email"),
    RequestChannel.LETTER.value: _l("Letter"),
    RequestChannel.PHONE.value: _l("Phone"),
    RequestChannel.IN_PERSON.value: _l("In person"),
    RequestChannel.WEB_FORM.value: _l("Web form"),
    RequestChannel.OTHER.value: _l("Other"),
}

STATUS_LABELS = {
    RequestStatus.OPEN.value: _l("open"),
    RequestStatus.DONE.value: _l("answered"),
    RequestStatus.REFUSED.value: _l("refused"),
}


def display_labels() -> dict[str, dict[str, Any]]:
    return {"kinds": KIND_LABELS, "channels": CHANNEL_LABELS, "statuses": STATUS_LABELS}


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class RequestForm(FlaskForm):
    kind = SelectField(
        _l("What is asked"),
        choices=options(KIND_LABELS.items()),
        validators=[DataRequired(message=_l("Choose what the person asks for."))],
    )
    received_on = DateField(
        _l("Received on"),
        validators=[InputRequired(message=_l("Enter the date the request arrived."))],
        description=_l("The answer is due one calendar month later."),
    )
    channel = SelectField(_l("Received by"), choices=options(CHANNEL_LABELS.items()))
    requester = StringField(
        _l("Requester"),
        validators=[Optional(), Length(max=200)],
        filters=[_strip],
        description=_l("As the person named themselves; taken from the client when empty."),
        render_kw={"autocomplete": "off", "maxlength": 200},
    )
    client_id = StringField(_l("Client"))
    details = TextAreaField(
        _l("What was asked"),
        validators=[Optional(), Length(max=MAX_TEXT)],
        filters=[_strip],
        description=_l("In the requester's words where it matters, e.g. which values to correct."),
        render_kw={"rows": 3},
    )
    identity_check = TextAreaField(
        _l("Identity check"),
        validators=[Optional(), Length(max=MAX_TEXT)],
        filters=[_strip],
        description=_l(
            "How you confirmed the requester is the person concerned (Art. 12(6)); "
            "needed before the request is answered."
        ),
        render_kw={"rows": 2},
    )
    assignee_id = SelectField(_l("Handled by"), choices=[], validate_choice=False)

    def __init__(self, *args: Any, user: User, keep_assignee: int | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.user = user
        self.client: Client | None = None
        self.assignee_id.choices = options([("", _l("Nobody yet")), *user_choices(keep_assignee)])

    def validate_client_id(self, field: Field) -> None:
        raw = (field.data or "").strip()
        if not raw:
            self.client = None
            return
        client = None
        if raw.isdigit():
            client = db.session.scalar(
                select(Client).where(Client.id == int(raw), visible_clients(self.user))
            )
        if client is None:
            raise ValidationError(_l("Choose a client from the search results."))
        self.client = client

    def validate_assignee_id(self, field: Field) -> None:
        if field.data and field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a person from the list."))

    @property
    def assignee(self) -> int | None:
        return int(self.assignee_id.data) if self.assignee_id.data else None


class ExtendForm(FlaskForm):
    until = DateField(
        _l("New deadline"), validators=[InputRequired(message=_l("Choose the new deadline."))]
    )
    reason = TextAreaField(
        _l("Reason"),
        validators=[
            DataRequired(message=_l("Say why more time is needed.")),
            Length(max=MAX_TEXT),
        ],
        filters=[_strip],
        description=_l(
            "E.g. the number or complexity of requests; the requester must be told "
            "within the first month."
        ),
        render_kw={"rows": 2},
    )


class CloseForm(FlaskForm):
    status = RadioField(
        _l("Result"),
        choices=options(
            [
                (RequestStatus.DONE.value, _l("Answered")),
                (RequestStatus.REFUSED.value, _l("Refused")),
            ]
        ),
        validators=[
            InputRequired(message=_l("Choose whether the request was answered or refused."))
        ],
    )
    outcome = TextAreaField(
        _l("Outcome"),
        validators=[
            DataRequired(message=_l("Describe the outcome: what was done or why it was refused.")),
            Length(max=MAX_TEXT),
        ],
        filters=[_strip],
        description=_l(
            "What was sent or changed, and when. A refusal states the reasons and the "
            "right to complain to a supervisory authority (Art. 12(4))."
        ),
        render_kw={"rows": 3},
    )
