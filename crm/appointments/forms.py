"""Forms of the appointments pages: services, weekly hours, exceptions, blocks, booking."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from itertools import pairwise
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    BooleanField,
    DateField,
    Field,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    ValidationError,
    widgets,
)
from wtforms.validators import URL, DataRequired, InputRequired, Length, NumberRange, Optional

from crm.appointments.models import BlockKind, ClientDatum, ExceptionKind, ReminderChannel
from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.deals.forms import AmountError, parse_amount
from crm.extensions import db
from crm.web.forms import options

MAX_DURATION_MINUTES = 12 * 60
MAX_BUFFER_MINUTES = 4 * 60  # slots.LOAD_MARGIN covers this
MAX_CAPACITY = 500
MAX_DAYS_AHEAD = 730

WEEKDAYS = [
    _l("Monday"),
    _l("Tuesday"),
    _l("Wednesday"),
    _l("Thursday"),
    _l("Friday"),
    _l("Saturday"),
    _l("Sunday"),
]

REMINDER_CHANNEL_LABELS = {
    ReminderChannel.EMAIL.value: _l("Email"),
    ReminderChannel.SMS.value: _l("SMS"),
}
MAX_REMINDER_DAYS = 14
MAX_CANCEL_CUTOFF_HOURS = 7 * 24

CLIENT_DATA_LABELS = {
    ClientDatum.NAME.value: _l("Name"),
    ClientDatum.EMAIL.value: _l("Email"),
    ClientDatum.PHONE.value: _l("Phone"),
    ClientDatum.ADDRESS.value: _l("Address"),
}

_TIME = re.compile(r"^(\d{1,2})(?:[:.](\d{2}))?$")
_RANGE_SPLIT = re.compile("\\s*[-\u2013\u2014]\\s*")  # hyphen, en dash, em dash


class TimeTextError(ValueError):
    """What is wrong with typed hours, for a person."""


def parse_time(text: str) -> time:
    """'9', '9:30', '09.30', '17:00' as a time of day."""
    match = _TIME.match(text.strip())
    if not match:
        raise TimeTextError(_("“%(text)s” is not a time; write it like 9:00 or 13:30.", text=text))
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if hour > 23 or minute > 59:
        raise TimeTextError(_("“%(text)s” is not a time of day.", text=text))
    return time(hour, minute)


def parse_intervals(text: str) -> list[tuple[time, time]]:
    """'9:00-12:00, 13:00-17:00' as sorted, non-overlapping intervals; '' is none."""
    intervals: list[tuple[time, time]] = []
    for part in filter(None, (p.strip() for p in re.split(r"[,;]", text or ""))):
        pieces = _RANGE_SPLIT.split(part)
        if len(pieces) != 2:
            raise TimeTextError(
                _("Write “%(text)s” as a start and an end, like 9:00-17:00.", text=part)
            )
        start, end = parse_time(pieces[0]), parse_time(pieces[1])
        if start >= end:
            raise TimeTextError(
                _("In “%(text)s” the end must come after the start (same day).", text=part)
            )
        intervals.append((start, end))
    intervals.sort()
    for (_s1, e1), (s2, _e2) in pairwise(intervals):
        if s2 < e1:
            raise TimeTextError(_("The intervals overlap; merge them into one."))
    return intervals


def format_intervals(intervals: list[tuple[time, time]]) -> str:
    return ", ".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in intervals)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class _Checkboxes(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


def staff_choices() -> list[tuple[str, str]]:
    rows = db.session.execute(
        select(User.id, User.full_name, User.email)
        .where(User.active.is_(True))
        .order_by(User.full_name, User.email)
    )
    return [(str(uid), name or email) for uid, name, email in rows]


class ServiceForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(message=_l("Name the service.")), Length(max=120)],
        filters=[_strip],
        render_kw={"maxlength": 120, "autocomplete": "off"},
    )
    description = TextAreaField(
        _l("Description"),
        validators=[Length(max=2000)],
        filters=[_strip],
        description=_l("Shown to clients when they book online."),
        render_kw={"rows": 2},
    )
    duration_minutes = IntegerField(
        _l("Duration (minutes)"),
        validators=[
            InputRequired(message=_l("How long does it take, in minutes?")),
            NumberRange(
                min=5, max=MAX_DURATION_MINUTES, message=_l("Between 5 minutes and 12 hours.")
            ),
        ],
        default=60,
        render_kw={"inputmode": "numeric", "min": 5, "max": MAX_DURATION_MINUTES},
    )
    buffer_before_minutes = IntegerField(
        _l("Buffer before (minutes)"),
        validators=[
            Optional(),
            NumberRange(min=0, max=MAX_BUFFER_MINUTES, message=_l("Between 0 and 240 minutes.")),
        ],
        default=0,
        description=_l("Preparation time kept free before each appointment."),
        render_kw={"inputmode": "numeric", "min": 0, "max": MAX_BUFFER_MINUTES},
    )
    buffer_after_minutes = IntegerField(
        _l("Buffer after (minutes)"),
        validators=[
            Optional(),
            NumberRange(min=0, max=MAX_BUFFER_MINUTES, message=_l("Between 0 and 240 minutes.")),
        ],
        default=0,
        description=_l("Tidying or travel time kept free after each appointment."),
        render_kw={"inputmode": "numeric", "min": 0, "max": MAX_BUFFER_MINUTES},
    )
    price = StringField(
        _l("Price"),
        description=_l("Optional. For example 150 or 1 250,50."),
        render_kw={"inputmode": "decimal", "autocomplete": "off"},
    )
    capacity = IntegerField(
        _l("Seats"),
        validators=[
            InputRequired(message=_l("At least one seat.")),
            NumberRange(min=1, max=MAX_CAPACITY, message=_l("Between 1 and 500 seats.")),
        ],
        default=1,
        description=_l(
            "1 for a visit; more for a workshop or seminar that several clients attend."
        ),
        render_kw={"inputmode": "numeric", "min": 1, "max": MAX_CAPACITY},
    )
    location = StringField(
        _l("Location"),
        validators=[Length(max=300)],
        filters=[_strip],
        description=_l("Address or room, shown in the booking and reminders."),
        render_kw={"maxlength": 300},
    )
    online_url = StringField(
        _l("Online meeting link"),
        validators=[
            Optional(),
            Length(max=500),
            URL(require_tld=False, message=_l("Enter a full link starting with https://.")),
        ],
        filters=[_strip],
        render_kw={"maxlength": 500, "type": "url", "placeholder": "https://"},
    )
    min_notice_hours = IntegerField(
        _l("Minimum notice (hours)"),
        validators=[
            Optional(),
            NumberRange(min=0, max=24 * 30, message=_l("Between 0 and 720 hours.")),
        ],
        default=2,
        description=_l("Online booking closes this long before a slot."),
        render_kw={"inputmode": "numeric", "min": 0},
    )
    max_days_ahead = IntegerField(
        _l("Book at most (days ahead)"),
        validators=[
            InputRequired(message=_l("How many days ahead may clients book?")),
            NumberRange(min=1, max=MAX_DAYS_AHEAD, message=_l("Between 1 and 730 days.")),
        ],
        default=60,
        render_kw={"inputmode": "numeric", "min": 1, "max": MAX_DAYS_AHEAD},
    )
    required_data = _Checkboxes(
        _l("Data asked of the client when booking online"),
        choices=options(CLIENT_DATA_LABELS.items()),
        default=[ClientDatum.NAME.value, ClientDatum.EMAIL.value],
        description=_l("Ask only for what this service needs (data minimisation)."),
    )
    staff_ids = _Checkboxes(_l("Offered by"), choices=[])
    online_booking = BooleanField(
        _l("Clients can book it online"),
        default=True,
        description=_l("Listed on the public booking page."),
    )
    cancel_cutoff_hours = IntegerField(
        _l("Online cancel or move until (hours before)"),
        validators=[
            Optional(),
            NumberRange(min=0, max=MAX_CANCEL_CUTOFF_HOURS, message=_l("Between 0 and 168 hours.")),
        ],
        default=24,
        description=_l("Later than this, clients have to call you."),
        render_kw={"inputmode": "numeric", "min": 0, "max": MAX_CANCEL_CUTOFF_HOURS},
    )
    reminder_channels = _Checkboxes(
        _l("Reminders by"),
        choices=options(REMINDER_CHANNEL_LABELS.items()),
        default=[ReminderChannel.EMAIL.value, ReminderChannel.SMS.value],
        description=_l("Only to clients with an address for it; none: no reminders."),
    )
    send_confirmation = BooleanField(
        _l("Send a confirmation when it is booked"),
        default=True,
    )
    reminder_days_before = IntegerField(
        _l("Reminder (days before)"),
        validators=[
            Optional(),
            NumberRange(
                min=0, max=MAX_REMINDER_DAYS, message=_l("Between 0 and 14 days; 0: none.")
            ),
        ],
        default=1,
        description=_l("0: no reminder before the day."),
        render_kw={"inputmode": "numeric", "min": 0, "max": MAX_REMINDER_DAYS},
    )
    reminder_hour = IntegerField(
        _l("Reminder hour"),
        validators=[
            Optional(),
            NumberRange(min=0, max=23, message=_l("An hour from 0 to 23.")),
        ],
        default=18,
        description=_l("Local time, e.g. 18 for 18:00."),
        render_kw={"inputmode": "numeric", "min": 0, "max": 23},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.staff_ids.choices = options(staff_choices())
        self.parsed_price: Decimal | None = None

    def validate_price(self, field: Field) -> None:
        try:
            self.parsed_price = parse_amount(field.data)
        except AmountError as exc:
            raise ValidationError(str(exc)) from None

    def validate_required_data(self, field: Field) -> None:
        if ClientDatum.NAME.value not in (field.data or []):
            raise ValidationError(_("A booking needs at least the client's name."))

    def validate_staff_ids(self, field: Field) -> None:
        if not field.data:
            raise ValidationError(_("Choose who offers this service."))

    def validate_reminder_channels(self, field: Field) -> None:
        if set(field.data or []) - set(REMINDER_CHANNEL_LABELS):
            raise ValidationError(_("Pick channels from the list."))


class WeeklyHoursForm(FlaskForm):
    """One text field per weekday: '9:00-12:00, 13:00-17:00'; empty is a day off."""

    day_0 = StringField(WEEKDAYS[0])
    day_1 = StringField(WEEKDAYS[1])
    day_2 = StringField(WEEKDAYS[2])
    day_3 = StringField(WEEKDAYS[3])
    day_4 = StringField(WEEKDAYS[4])
    day_5 = StringField(WEEKDAYS[5])
    day_6 = StringField(WEEKDAYS[6])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsed: dict[int, list[tuple[time, time]]] = {}
        for n in range(7):
            self.day_field(n).render_kw = {"placeholder": _("not working"), "autocomplete": "off"}

    def day_field(self, weekday: int) -> Field:
        return getattr(self, f"day_{weekday}")

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        for n in range(7):
            field = self.day_field(n)
            try:
                self.parsed[n] = parse_intervals(field.data or "")
            except TimeTextError as exc:
                field.errors = [*field.errors, str(exc)]
                ok = False
        return ok


class ExceptionForm(FlaskForm):
    kind = SelectField(
        _l("What"),
        choices=options(
            [
                (ExceptionKind.OFF.value, _l("Day(s) off")),
                (ExceptionKind.HOURS.value, _l("Different hours")),
            ]
        ),
        default=ExceptionKind.OFF.value,
    )
    start_date = DateField(_l("From"), validators=[DataRequired(message=_l("Pick a date."))])
    end_date = DateField(
        _l("Until"), validators=[Optional()], description=_l("Empty: the same day.")
    )
    hours = StringField(
        _l("Hours"),
        description=_l("For different hours, e.g. 10:00-14:00."),
        render_kw={"placeholder": "10:00-14:00", "autocomplete": "off"},
    )
    note = StringField(
        _l("Note"), validators=[Length(max=200)], filters=[_strip], render_kw={"maxlength": 200}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.intervals: list[tuple[time, time]] = []

    def validate_end_date(self, field: Field) -> None:
        if field.data and self.start_date.data and field.data < self.start_date.data:
            raise ValidationError(_("The last day comes before the first."))
        if field.data and self.start_date.data and (field.data - self.start_date.data).days > 366:
            raise ValidationError(_("At most a year at a time."))

    def validate_hours(self, field: Field) -> None:
        if self.kind.data != ExceptionKind.HOURS.value:
            return
        try:
            self.intervals = parse_intervals(field.data or "")
        except TimeTextError as exc:
            raise ValidationError(str(exc)) from None
        if not self.intervals:
            raise ValidationError(_("Give the hours for these dates, e.g. 10:00-14:00."))

    @property
    def last_date(self) -> date:
        return self.end_date.data or self.start_date.data


class BlockForm(FlaskForm):
    kind = SelectField(
        _l("Repeats"),
        choices=options(
            [(BlockKind.ONCE.value, _l("Once")), (BlockKind.WEEKLY.value, _l("Every week"))]
        ),
        default=BlockKind.ONCE.value,
    )
    day = DateField(_l("Date"), validators=[Optional()], description=_l("For a one-off block."))
    weekday = SelectField(
        _l("Weekday"),
        choices=options((str(n), label) for n, label in enumerate(WEEKDAYS)),
        default="0",
        description=_l("For a weekly block."),
    )
    hours = StringField(
        _l("Time"),
        validators=[DataRequired(message=_l("Give the time, e.g. 9:00-10:00."))],
        render_kw={"placeholder": "9:00-10:00", "autocomplete": "off"},
    )
    note = StringField(
        _l("What for"),
        validators=[Length(max=200)],
        filters=[_strip],
        render_kw={"maxlength": 200, "placeholder": _l("Team meeting")},
    )
    scope = SelectField(
        _l("For"),
        choices=options([("self", _l("This person")), ("team", _l("Everyone"))]),
        default="self",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interval: tuple[time, time] | None = None

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        # Here rather than in validate_day: Optional() stops that chain on an empty date.
        if self.kind.data == BlockKind.ONCE.value and not self.day.data and not self.day.errors:
            self.day.errors = [*self.day.errors, _("Pick the date of the block.")]
            ok = False
        return ok

    def validate_hours(self, field: Field) -> None:
        try:
            intervals = parse_intervals(field.data or "")
        except TimeTextError as exc:
            raise ValidationError(str(exc)) from None
        if len(intervals) != 1:
            raise ValidationError(_("Give one stretch of time, e.g. 9:00-10:00."))
        self.interval = intervals[0]


def parse_instant(raw: str | None) -> datetime | None:
    """An ISO 8601 instant with its offset (what slot links carry), as UTC."""
    try:
        value = datetime.fromisoformat((raw or "").strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


class BookingForm(FlaskForm):
    service_id = SelectField(_l("Service"), choices=[], validate_choice=False)
    client_id = StringField(_l("Client"))
    notes = TextAreaField(
        _l("Notes"), validators=[Length(max=2000)], filters=[_strip], render_kw={"rows": 2}
    )

    # Shown only when reminders rest on consent (the view drops it otherwise).
    reminders_agreed = BooleanField(
        _l("Client agreed to reminders"),
        default=False,
        description=_l("Tick only if the client said yes to reminders by email and SMS."),
    )

    def __init__(self, *args: Any, user: User, services: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.services = {str(s.id): s for s in services}
        self.service_id.choices = options((str(s.id), s.name) for s in services)
        self.client: Client | None = None

    def validate_service_id(self, field: Field) -> None:
        if field.data not in self.services:
            raise ValidationError(_("Pick a service from the list."))

    def validate_client_id(self, field: Field) -> None:
        raw = (field.data or "").strip()
        client = None
        if raw.isdigit():
            client = db.session.scalar(
                select(Client).where(Client.id == int(raw), visible_clients(self.user))
            )
        if client is None:
            raise ValidationError(_("Choose the client this appointment is for."))
        self.client = client

    @property
    def service(self) -> Any:
        return self.services.get(self.service_id.data or "")


class NotesForm(FlaskForm):
    notes = TextAreaField(
        _l("Notes"), validators=[Length(max=2000)], filters=[_strip], render_kw={"rows": 3}
    )
