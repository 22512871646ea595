"""Appointments: the services clients book, staff availability and the appointments.

Times of day that repeat (working hours, weekly blocks) are stored as local wall-clock
times with a weekday or a date, in the organisation's time zone, and turned into
instants per day: "9:00 on Mondays" stays 9:00 across a daylight-saving change.
Appointments and one-off blocks are instants, stored in UTC.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User
    from crm.clients.models import Client


class AppointmentStatus(enum.StrEnum):
    """The fixed set of states. Every one but cancelled holds its seat."""

    BOOKED = "booked"
    CONFIRMED = "confirmed"
    DONE = "done"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


# States that occupy the staff member's time (and a seat of the session).
HOLDING_STATUSES = tuple(s.value for s in AppointmentStatus if s is not AppointmentStatus.CANCELLED)


class AppointmentSource(enum.StrEnum):
    STAFF = "staff"  # booked by staff in the calendar
    ONLINE = "online"  # booked by the client on the public booking page


class ClientDatum(enum.StrEnum):
    """What a service asks of the client when booked online (data minimisation)."""

    NAME = "name"
    EMAIL = "email"
    PHONE = "phone"
    ADDRESS = "address"


class ReminderKind(enum.StrEnum):
    CONFIRMATION = "confirmation"  # sent at once when the appointment is booked
    BEFORE = "before"  # sent at the service's hour, the set number of days before


class ReminderChannel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


class ReminderStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waiting for its due time
    SENDING = "sending"  # claimed by a sweep; a worker sends it
    SENT = "sent"
    SKIPPED = "skipped"  # not sent, on purpose: no consent, restricted, opted out
    CANCELLED = "cancelled"  # the appointment was cancelled, or SMS were opted out
    FAILED = "failed"  # the gateway or mail server refused it for good


# States a reminder can still leave for "sent".
OPEN_REMINDER_STATUSES = (ReminderStatus.SCHEDULED.value, ReminderStatus.SENDING.value)


class FeedDetail(enum.StrEnum):
    """How much of the client a staff calendar feed shows (organisation setting)."""

    BOOKED = "booked"  # just "Booked" and the service
    FIRST_NAME = "first_name"  # the client's first name and the service


class ExceptionKind(enum.StrEnum):
    OFF = "off"  # no working hours on these dates (holiday, sick leave)
    HOURS = "hours"  # these hours instead of the weekly ones


class BlockKind(enum.StrEnum):
    ONCE = "once"  # one stretch of time (starts_at..ends_at)
    WEEKLY = "weekly"  # every week on a weekday (weekday, start_time..end_time)


service_staff = Table(
    "appointment_service_staff",
    db.metadata,
    Column(
        "service_id",
        ForeignKey("appointment_services.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Service(db.Model):
    """An appointment type: what is booked, for how long, by whom, and how far ahead."""

    __tablename__ = "appointment_services"
    __table_args__ = (
        CheckConstraint("duration_minutes > 0", name="duration"),
        CheckConstraint("capacity >= 1", name="capacity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    duration_minutes: Mapped[int] = mapped_column(Integer)
    buffer_before_minutes: Mapped[int] = mapped_column(Integer, default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(Integer, default=0)
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    # The organisation's currency when the price was set; None shows a plain amount.
    currency: Mapped[str | None] = mapped_column(String(3))
    # 1 for a visit; N seats for a workshop or seminar (N clients at the same start).
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    location: Mapped[str] = mapped_column(String(300), default="")
    online_url: Mapped[str] = mapped_column(String(500), default="")
    min_notice_hours: Mapped[int] = mapped_column(Integer, default=2)
    max_days_ahead: Mapped[int] = mapped_column(Integer, default=60)
    # A subset of ClientDatum values, asked of the client when booking online.
    required_data: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["name", "email"])
    # Listed on the public booking page (/book).
    online_booking: Mapped[bool] = mapped_column(Boolean, default=True)
    # Clients may cancel or move an online booking until this many hours before it.
    cancel_cutoff_hours: Mapped[int] = mapped_column(Integer, default=24)
    # Reminders: a ReminderChannel subset; a confirmation at booking; one more
    # `reminder_days_before` days before (0: none) at `reminder_hour` local time.
    reminder_channels: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["email", "sms"])
    send_confirmation: Mapped[bool] = mapped_column(Boolean, default=True)
    reminder_days_before: Mapped[int] = mapped_column(Integer, default=1)
    reminder_hour: Mapped[int] = mapped_column(SmallInteger, default=18)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    staff: Mapped[list[User]] = relationship(secondary=service_staff, order_by="User.full_name")

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class WorkingHours(db.Model):
    """One interval of a staff member's weekly hours (several per weekday allowed)."""

    __tablename__ = "appointment_working_hours"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("start_time < end_time", name="order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    weekday: Mapped[int] = mapped_column(SmallInteger)  # 0 Monday .. 6 Sunday
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)


class AvailabilityException(db.Model):
    """Dates that differ from the weekly hours: a day or range off, or other hours on
    those dates (several rows for the same dates give several intervals)."""

    __tablename__ = "appointment_exceptions"
    __table_args__ = (
        CheckConstraint("start_date <= end_date", name="dates"),
        Index("ix_appointment_exceptions_user_dates", "user_id", "end_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8), default=ExceptionKind.OFF.value)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    start_time: Mapped[time | None] = mapped_column(Time)  # kind "hours" only
    end_time: Mapped[time | None] = mapped_column(Time)
    note: Mapped[str] = mapped_column(String(200), default="")


class Block(db.Model):
    """Time nobody can book: once (an instant range) or weekly (a weekday and local
    times, e.g. the Monday 9:00-10:00 team meeting). No user means the whole team."""

    __tablename__ = "appointment_blocks"
    __table_args__ = (Index("ix_appointment_blocks_user_kind", "user_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # once
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    weekday: Mapped[int | None] = mapped_column(SmallInteger)  # weekly
    start_time: Mapped[time | None] = mapped_column(Time)
    end_time: Mapped[time | None] = mapped_column(Time)
    note: Mapped[str] = mapped_column(String(200), default="")


class Appointment(db.Model):
    """One client's booking of a service with a staff member. A seat-based service has
    one row per client at the same start (a session)."""

    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("starts_at < ends_at", name="order"),
        Index("ix_appointments_staff_starts", "staff_id", "starts_at"),
        Index("ix_appointments_client_starts", "client_id", "starts_at"),
        Index("ix_appointments_public_token", "public_token", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("appointment_services.id"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The service's buffers when booked: a later change of the service does not move
    # the time already kept free around existing appointments.
    buffer_before_minutes: Mapped[int] = mapped_column(Integer, default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default=AppointmentStatus.BOOKED.value)
    source: Mapped[str] = mapped_column(String(8), default=AppointmentSource.STAFF.value)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Random part of the client's signed manage link (view, cancel, reschedule); a new
    # one invalidates links sent before.
    public_token: Mapped[str | None] = mapped_column(String(43))

    service: Mapped[Service] = relationship()
    staff: Mapped[User] = relationship(foreign_keys=[staff_id])
    client: Mapped[Client] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    @property
    def holds_time(self) -> bool:
        return self.status != AppointmentStatus.CANCELLED.value


class Reminder(db.Model):
    """One message about one appointment over one channel, due at one instant. The
    periodic sweep claims due rows (status scheduled -> sending) with a conditional
    update, so overlapping sweeps never claim the same row twice."""

    __tablename__ = "appointment_reminders"
    __table_args__ = (
        UniqueConstraint("appointment_id", "kind", "channel", name="uq_appointment_reminders_kind"),
        Index("ix_appointment_reminders_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(8))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(12), default=ReminderStatus.SCHEDULED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why it was skipped, cancelled or failed, for staff (no message text).
    detail: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    appointment: Mapped[Appointment] = relationship()


class CalendarFeed(db.Model):
    """A staff member's secret calendar subscription URL. Only a hash of the secret is
    stored; revoking sets revoked_at and the URL answers 404 from then on."""

    __tablename__ = "calendar_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
