"""Services (appointment types), availability, and booking. Services change state and
flush; the caller commits once.

Booking never double-books, also under concurrent requests: `book`, `reschedule` take a
lock that serialises all bookings of the staff members involved, then run the slot
engine again for exactly that time inside the same transaction, and only then insert.

- PostgreSQL: a transaction-level advisory lock keyed by (APPOINTMENT_LOCK_CLASS, staff
  id), held until commit or rollback. Under READ COMMITTED the engine's queries after the
  lock see every booking the previous holder committed.
- SQLite: one writer at a time. A no-op write as the first statement of the transaction
  takes the write lock (waiting up to the busy timeout) and makes our snapshot the newest
  one. The caller must start a fresh transaction first (commit its reads): a transaction
  that read before another connection committed cannot take the lock at all.

A booking that lost the race raises SlotTaken; views answer 409 with a friendly page.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask_babel import gettext as _
from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import joinedload, load_only, selectinload

from crm.appointments.models import (
    HOLDING_STATUSES,
    Appointment,
    AppointmentSource,
    AppointmentStatus,
    AvailabilityException,
    Block,
    BlockKind,
    ExceptionKind,
    ReminderChannel,
    Service,
    WorkingHours,
    service_staff,
)
from crm.appointments.slots import (
    ServiceRule,
    Slot,
    free_slots,
    load_schedules,
    range_bounds,
)
from crm.audit.services import record as audit
from crm.auth.models import User
from crm.clients.models import Client
from crm.extensions import db
from crm.org.services import organisation
from crm.sqltypes import utcnow

# First int of the two-int advisory lock key on PostgreSQL: keeps these locks apart
# from other users of advisory locks (the audit chain uses the one-bigint form).
APPOINTMENT_LOCK_CLASS = 4201
CARD_UPCOMING = 5
CARD_RECENT = 5


class SlotTaken(Exception):
    """The chosen time is no longer free (someone else booked it first)."""


class BookingError(ValueError):
    """A booking request that makes no sense (e.g. an archived service), for a person."""


def org_zone() -> ZoneInfo:
    try:
        return ZoneInfo(organisation().timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_today(now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(org_zone()).date()


# --- services ------------------------------------------------------------------------------


def active_services() -> list[Service]:
    return list(
        db.session.scalars(
            select(Service)
            .options(selectinload(Service.staff).load_only(*User.display_columns()))
            .where(Service.archived_at.is_(None))
            .order_by(Service.name, Service.id)
        )
    )


def all_services() -> list[Service]:
    return list(
        db.session.scalars(
            select(Service)
            .options(selectinload(Service.staff).load_only(*User.display_columns()))
            .order_by(Service.archived_at.is_not(None), Service.name, Service.id)
        )
    )


def get_service(service_id: int) -> Service | None:
    return db.session.get(Service, service_id)


def name_taken(name: str, service: Service | None = None) -> bool:
    stmt = select(Service.id).where(
        func.lower(Service.name) == name.lower(), Service.archived_at.is_(None)
    )
    if service is not None and service.id is not None:
        stmt = stmt.where(Service.id != service.id)
    return db.session.scalar(stmt.limit(1)) is not None


@dataclass
class ServiceSpec:
    name: str
    description: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    price: Decimal | None
    capacity: int
    location: str
    online_url: str
    min_notice_hours: int
    max_days_ahead: int
    required_data: list[str]
    staff_ids: list[int]
    # Reminders and online booking (defaults as for a new service).
    reminder_channels: list[str] = field(default_factory=lambda: ["email", "sms"])
    send_confirmation: bool = True
    reminder_days_before: int = 1
    reminder_hour: int = 18
    online_booking: bool = True
    cancel_cutoff_hours: int = 24


def save_service(spec: ServiceSpec, service: Service | None = None) -> Service:
    if service is None:
        service = Service()
        db.session.add(service)
    service.name = " ".join(spec.name.split())[:120]
    service.description = spec.description.strip()
    service.duration_minutes = spec.duration_minutes
    service.buffer_before_minutes = spec.buffer_before_minutes
    service.buffer_after_minutes = spec.buffer_after_minutes
    if spec.price != service.price or service.currency is None:
        # The currency is the organisation's when the price is set; no price, none.
        service.currency = (
            (organisation().default_currency or None) if spec.price is not None else None
        )
    service.price = spec.price
    service.capacity = spec.capacity
    service.location = spec.location.strip()
    service.online_url = spec.online_url.strip()
    service.min_notice_hours = spec.min_notice_hours
    service.max_days_ahead = spec.max_days_ahead
    service.required_data = list(spec.required_data)
    plan_before = (
        list(service.reminder_channels or []),
        service.reminder_days_before,
        service.reminder_hour,
    )
    service.reminder_channels = [
        c.value for c in ReminderChannel if c.value in set(spec.reminder_channels)
    ]
    service.send_confirmation = bool(spec.send_confirmation)
    service.reminder_days_before = max(0, int(spec.reminder_days_before))
    service.reminder_hour = min(max(int(spec.reminder_hour), 0), 23)
    service.online_booking = bool(spec.online_booking)
    service.cancel_cutoff_hours = max(0, int(spec.cancel_cutoff_hours))
    service.staff = list(db.session.scalars(select(User).where(User.id.in_(spec.staff_ids))))
    db.session.flush()
    plan_after = (service.reminder_channels, service.reminder_days_before, service.reminder_hour)
    if service.id is not None and plan_before != plan_after:
        from crm.appointments.reminders import replan_service

        replan_service(service)  # upcoming day-before reminders follow the new setting
    return service


def set_archived(service: Service, archived: bool) -> None:
    service.archived_at = utcnow() if archived else None
    db.session.flush()


def service_usage() -> dict[int, int]:
    """Upcoming holding appointments per service, shown before archiving."""
    rows = db.session.execute(
        select(Appointment.service_id, func.count())
        .where(Appointment.status.in_(HOLDING_STATUSES), Appointment.starts_at >= utcnow())
        .group_by(Appointment.service_id)
    )
    return {service_id: count for service_id, count in rows}


def staff_for(service: Service) -> list[User]:
    return [u for u in service.staff if u.active]


def bookable_staff() -> list[User]:
    """Active users who offer at least one active service, by name."""
    offering = (
        select(service_staff.c.user_id)
        .join(Service, Service.id == service_staff.c.service_id)
        .where(Service.archived_at.is_(None))
    )
    return list(
        db.session.scalars(
            select(User)
            .options(load_only(*User.display_columns()))
            .where(User.active.is_(True), User.id.in_(offering))
            .order_by(User.full_name, User.email)
        )
    )


# --- availability --------------------------------------------------------------------------


def weekly_hours(user_id: int) -> dict[int, list[tuple[time, time]]]:
    hours: dict[int, list[tuple[time, time]]] = {d: [] for d in range(7)}
    for row in db.session.scalars(
        select(WorkingHours)
        .where(WorkingHours.user_id == user_id)
        .order_by(WorkingHours.weekday, WorkingHours.start_time)
    ):
        hours[row.weekday].append((row.start_time, row.end_time))
    return hours


def set_weekly_hours(user_id: int, hours: dict[int, list[tuple[time, time]]]) -> None:
    """Replace the staff member's weekly hours (intervals already validated)."""
    db.session.execute(WorkingHours.__table__.delete().where(WorkingHours.user_id == user_id))
    for weekday, intervals in hours.items():
        for start, end in intervals:
            db.session.add(
                WorkingHours(user_id=user_id, weekday=weekday, start_time=start, end_time=end)
            )
    db.session.flush()


def exceptions_for(user_id: int, from_date: date) -> list[AvailabilityException]:
    return list(
        db.session.scalars(
            select(AvailabilityException)
            .where(
                AvailabilityException.user_id == user_id,
                AvailabilityException.end_date >= from_date,
            )
            .order_by(AvailabilityException.start_date, AvailabilityException.start_time)
        )
    )


def add_exception(
    user_id: int,
    kind: ExceptionKind,
    start_date: date,
    end_date: date,
    start_time: time | None = None,
    end_time: time | None = None,
    note: str = "",
) -> AvailabilityException:
    row = AvailabilityException(
        user_id=user_id,
        kind=kind.value,
        start_date=start_date,
        end_date=end_date,
        start_time=start_time if kind is ExceptionKind.HOURS else None,
        end_time=end_time if kind is ExceptionKind.HOURS else None,
        note=note.strip()[:200],
    )
    db.session.add(row)
    db.session.flush()
    return row


def blocks_for(user_id: int, from_instant: datetime) -> list[Block]:
    """The staff member's weekly blocks and future one-off blocks, and the team's."""
    return list(
        db.session.scalars(
            select(Block)
            .where(
                (Block.user_id == user_id) | Block.user_id.is_(None),
                (Block.kind == BlockKind.WEEKLY.value) | (Block.ends_at >= from_instant),
            )
            .order_by(Block.kind, Block.weekday, Block.start_time, Block.starts_at)
        )
    )


def add_block(
    user_id: int | None,
    kind: BlockKind,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    weekday: int | None = None,
    start_time: time | None = None,
    end_time: time | None = None,
    note: str = "",
) -> Block:
    block = Block(user_id=user_id, kind=kind.value, note=note.strip()[:200])
    if kind is BlockKind.ONCE:
        block.starts_at, block.ends_at = starts_at, ends_at
    else:
        block.weekday, block.start_time, block.end_time = weekday, start_time, end_time
    db.session.add(block)
    db.session.flush()
    return block


# --- slots ---------------------------------------------------------------------------------


def slots_for(
    service: Service,
    start: date,
    end: date,
    *,
    staff_ids: Sequence[int] | None = None,
    now: datetime | None = None,
    honour_window: bool = True,
    exclude_appointment: int | None = None,
) -> list[Slot]:
    """Free slots of `service` on local dates start..end, for the staff members who
    offer it (restricted to `staff_ids` when given; "anyone" otherwise)."""
    offering = [u.id for u in staff_for(service)]
    if staff_ids is not None:
        offering = [sid for sid in offering if sid in set(staff_ids)]
    zone = org_zone()
    schedules = load_schedules(offering, start, end, zone)
    return free_slots(
        ServiceRule.of(service),
        schedules.values(),
        start,
        end,
        zone,
        now or utcnow(),
        honour_window=honour_window,
        exclude_appointment=exclude_appointment,
    )


# --- booking -------------------------------------------------------------------------------


def lock_staff(staff_ids: Sequence[int]) -> None:
    """Serialise bookings of these staff members until the transaction ends (see the
    module doc). On SQLite, call it as the first statement of a fresh transaction."""
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        for staff_id in sorted(set(staff_ids)):  # one order everywhere: no deadlock
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:cls, :key)"),
                {"cls": APPOINTMENT_LOCK_CLASS, "key": staff_id},
            )
    elif connection.dialect.name == "sqlite":
        connection.execute(text("DELETE FROM appointment_blocks WHERE 1 = 0"))


def _check_free(
    service: Service,
    staff_id: int,
    starts_at: datetime,
    now: datetime,
    *,
    honour_window: bool,
    exclude_appointment: int | None = None,
) -> Slot:
    zone = org_zone()
    day = starts_at.astimezone(zone).date()
    # The day before too: a slot found by walking a working interval that began then.
    for slot in slots_for(
        service,
        day - timedelta(days=1),
        day,
        staff_ids=[staff_id],
        now=now,
        honour_window=honour_window,
        exclude_appointment=exclude_appointment,
    ):
        if slot.starts_at == starts_at and slot.staff_id == staff_id:
            return slot
    raise SlotTaken


def book(
    *,
    service: Service,
    staff_id: int,
    client_id: int,
    starts_at: datetime,
    notes: str = "",
    created_by: User | None = None,
    source: AppointmentSource = AppointmentSource.STAFF,
    now: datetime | None = None,
) -> Appointment:
    """Book one seat of `service` with the staff member at `starts_at` for the client,
    or raise SlotTaken. Online bookings honour the service's booking window.

    The lock comes first, before anything (even an expired attribute) is read."""
    lock_staff([staff_id])
    if service.archived:
        raise BookingError(_("This service is archived and cannot be booked."))
    if staff_id not in {u.id for u in staff_for(service)}:
        raise BookingError(_("This staff member does not offer this service."))
    now = now or utcnow()
    _check_free(service, staff_id, starts_at, now, honour_window=source is AppointmentSource.ONLINE)
    if service.capacity > 1 and _already_in_session(service.id, staff_id, starts_at, client_id):
        raise BookingError(_("This client already has a seat in this session."))
    appointment = Appointment(
        service_id=service.id,
        staff_id=staff_id,
        client_id=client_id,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=service.duration_minutes),
        buffer_before_minutes=service.buffer_before_minutes,
        buffer_after_minutes=service.buffer_after_minutes,
        status=AppointmentStatus.BOOKED.value,
        source=source.value,
        notes=notes.strip(),
        created_by_id=created_by.id if created_by else None,
        # The random part of the client's manage link.
        public_token=secrets.token_urlsafe(32),
    )
    db.session.add(appointment)
    db.session.flush()
    _audit(appointment, "appointment.book")
    from crm.appointments.reminders import schedule_reminders

    schedule_reminders(appointment, now)
    return appointment


def _already_in_session(
    service_id: int, staff_id: int, starts_at: datetime, client_id: int
) -> bool:
    return (
        db.session.scalar(
            select(Appointment.id)
            .where(
                Appointment.service_id == service_id,
                Appointment.staff_id == staff_id,
                Appointment.starts_at == starts_at,
                Appointment.client_id == client_id,
                Appointment.status.in_(HOLDING_STATUSES),
            )
            .limit(1)
        )
        is not None
    )


def reschedule(
    appointment: Appointment,
    *,
    current_staff_id: int,
    staff_id: int,
    starts_at: datetime,
    now: datetime | None = None,
) -> None:
    """Move the appointment to another free slot (possibly with another staff member
    offering the service), or raise SlotTaken. `current_staff_id` is the staff member
    it is with now (read before the transaction began), locked with the new one."""
    lock_staff([current_staff_id, staff_id])
    if appointment.staff_id != current_staff_id:
        raise SlotTaken  # moved by someone else meanwhile
    if not appointment.holds_time:
        raise BookingError(_("A cancelled appointment cannot be moved; book a new one."))
    service = appointment.service
    if staff_id not in {u.id for u in staff_for(service)}:
        raise BookingError(_("This staff member does not offer this service."))
    _check_free(
        service,
        staff_id,
        starts_at,
        now or utcnow(),
        honour_window=False,
        exclude_appointment=appointment.id,
    )
    before = appointment.starts_at
    appointment.staff_id = staff_id
    appointment.starts_at = starts_at
    appointment.ends_at = starts_at + timedelta(minutes=service.duration_minutes)
    if appointment.status == AppointmentStatus.CONFIRMED.value:
        # Confirmed was for the old time.
        appointment.status = AppointmentStatus.BOOKED.value
    db.session.flush()
    db.session.expire(appointment, ["staff"])
    _audit(appointment, "appointment.reschedule", {"from": before.isoformat()})
    from crm.appointments.reminders import schedule_reminders

    # The day-before ones move with it; the confirmation is not sent again.
    schedule_reminders(appointment, now, confirm=False)


def set_status(
    appointment: Appointment, status: AppointmentStatus, now: datetime | None = None
) -> None:
    now = now or utcnow()
    if appointment.status == AppointmentStatus.CANCELLED.value:
        raise BookingError(_("This appointment was cancelled; book a new one instead."))
    if (
        status in (AppointmentStatus.DONE, AppointmentStatus.NO_SHOW)
        and appointment.starts_at > now
    ):
        raise BookingError(_("An appointment can be marked done or no-show once it has begun."))
    if status is AppointmentStatus.CANCELLED:
        appointment.cancelled_at = now
    old = appointment.status
    appointment.status = status.value
    db.session.flush()
    _audit(appointment, "appointment.status", {"status": [old, status.value]})
    if status is AppointmentStatus.CANCELLED:
        from crm.appointments.reminders import cancel_reminders

        cancel_reminders(appointment, "appointment cancelled")


def cancel(appointment: Appointment, now: datetime | None = None) -> None:
    set_status(appointment, AppointmentStatus.CANCELLED, now)


def update_notes(appointment: Appointment, notes: str) -> None:
    appointment.notes = notes.strip()
    db.session.flush()


def _audit(appointment: Appointment, action: str, details: dict | None = None) -> None:
    audit(
        action,
        target_type="appointment",
        target_id=appointment.id,
        client_id=appointment.client_id,
        details={
            "service_id": appointment.service_id,
            "staff_id": appointment.staff_id,
            "starts_at": appointment.starts_at.isoformat(),
            **(details or {}),
        },
    )


# --- reading -------------------------------------------------------------------------------


def appointment_query() -> Select[tuple[Appointment]]:
    return select(Appointment).options(
        joinedload(Appointment.service).load_only(
            Service.id, Service.name, Service.capacity, Service.duration_minutes
        ),
        joinedload(Appointment.staff).load_only(*User.display_columns()),
        joinedload(Appointment.client).load_only(
            Client.id, Client.first_name, Client.last_name, Client.company, Client.owner_id
        ),
    )


def appointments_between(
    staff_ids: Sequence[int], begin: datetime, end: datetime
) -> list[Appointment]:
    """Appointments (cancelled ones too) of the staff starting in [begin, end)."""
    return list(
        db.session.scalars(
            appointment_query()
            .where(
                Appointment.staff_id.in_(list(staff_ids)),
                Appointment.starts_at >= begin,
                Appointment.starts_at < end,
            )
            .order_by(Appointment.starts_at, Appointment.id)
        )
    )


@dataclass
class ClientAppointments:
    upcoming: list[Appointment]
    recent: list[Appointment]


def client_appointments(client_id: int, now: datetime | None = None) -> ClientAppointments:
    """The client's next and latest appointments: two small indexed range reads on
    (client_id, starts_at)."""
    now = now or utcnow()
    upcoming = list(
        db.session.scalars(
            appointment_query()
            .where(Appointment.client_id == client_id, Appointment.starts_at >= now)
            .order_by(Appointment.starts_at)
            .limit(CARD_UPCOMING)
        )
    )
    recent = list(
        db.session.scalars(
            appointment_query()
            .where(Appointment.client_id == client_id, Appointment.starts_at < now)
            .order_by(Appointment.starts_at.desc())
            .limit(CARD_RECENT)
        )
    )
    return ClientAppointments(upcoming=upcoming, recent=recent)


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return range_bounds(start, end, org_zone())


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def status_labels() -> dict[str, str]:
    # Looked up per request, so the labels follow the reader's language.
    return {
        AppointmentStatus.BOOKED.value: _("Booked"),
        AppointmentStatus.CONFIRMED.value: _("Confirmed"),
        AppointmentStatus.DONE.value: _("Done"),
        AppointmentStatus.NO_SHOW.value: _("No-show"),
        AppointmentStatus.CANCELLED.value: _("Cancelled"),
    }
