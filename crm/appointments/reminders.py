"""Appointment reminders: the rows that plan them, the SMS opt-out, and the legal basis
for reminding (the "reminders" purpose of the consent ledger).

Each reminder is one row per appointment, kind (confirmation, before) and channel,
with its due time and status. Booking, moving and cancelling an appointment keep the
rows in step here; the periodic sweep in crm.appointments.tasks claims due rows and a
worker sends them, asking `may_contact` at send time.

Services change state and flush; the caller commits once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from flask import current_app
from flask_babel import lazy_gettext as _l
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from crm.appointments.models import (
    OPEN_REMINDER_STATUSES,
    Appointment,
    AppointmentSource,
    Reminder,
    ReminderChannel,
    ReminderKind,
    ReminderStatus,
    Service,
)
from crm.audit.services import record as audit
from crm.auth.models import User
from crm.clients.models import Client
from crm.consents.models import (
    ConsentNotice,
    ConsentPurpose,
    ConsentState,
    ConsentStatus,
    EventKind,
    LegalBasis,
    Method,
)
from crm.consents.services import (
    DEFAULT_VALIDITY_MONTHS,
    ConsentError,
    Evidence,
    PurposeSpec,
    create_purpose,
    find_purpose,
    is_valid,
    latest_notices,
    now_utc,
    record_event,
    update_purpose,
    valid_condition,
)
from crm.extensions import db

PURPOSE_KEY = "reminders"
ALLOWED_BASES = (LegalBasis.CONSENT, LegalBasis.CONTRACT, LegalBasis.LEGITIMATE_INTEREST)
RETENTION_MONTHS = 24
STOP_SALT = "crm.appointments.sms-stop"

PURPOSE_NAME = "Appointment reminders"
PURPOSE_DESCRIPTION = (
    "Confirmations of booked appointments and a reminder before each one, by email "
    "and SMS. The messages only concern the appointment."
)
LEGITIMATE_INTEREST = (
    "Reminding clients of the appointments they booked, so that fewer are missed and "
    "the time kept for them is not lost."
)
# The first notice texts; staff edit them in the register like any other purpose.
NOTICES = {
    "en": "We confirm each appointment you book and remind you of it the day before, by "
    "email and SMS. Each SMS says how to stop SMS; you can object at any time.",
    "pl": "Potwierdzamy każdą umówioną wizytę i przypominamy o niej dzień wcześniej, "
    "e-mailem i SMS-em. Każdy SMS mówi, jak zrezygnować z SMS-ów; możesz w każdej "
    "chwili wnieść sprzeciw.",
    "de": "Wir bestätigen jeden gebuchten Termin und erinnern Sie am Vortag daran, per "
    "E-Mail und SMS. Jede SMS nennt, wie Sie SMS abbestellen; Sie können jederzeit "
    "widersprechen.",
    "cs": "Každou objednanou schůzku potvrdíme a den předem vám ji připomeneme e-mailem "
    "a SMS. Každá SMS uvádí, jak SMS odhlásit; kdykoli můžete vznést námitku.",
}


class _Raced(Exception):
    """Another transaction created the purpose first (our insert got another key)."""


# --- the purpose and its legal basis ----------------------------------------------------


def reminders_purpose(now: datetime | None = None) -> ConsentPurpose:
    """The "reminders" purpose, created on first use (legitimate interest). Two first
    uses at once: the loser's savepoint rolls back and it reads the winner's row."""
    found = find_purpose(PURPOSE_KEY)
    if found is not None:
        return found
    spec = PurposeSpec(
        key=PURPOSE_KEY,
        name=PURPOSE_NAME,
        legal_basis=LegalBasis.LEGITIMATE_INTEREST,
        retention_months=RETENTION_MONTHS,
        validity_months=None,
        channels=[ReminderChannel.EMAIL.value, ReminderChannel.SMS.value],
        description=PURPOSE_DESCRIPTION,
        legitimate_interest=LEGITIMATE_INTEREST,
        data_categories="Name, email address, phone number, appointment times",
    )
    try:
        with db.session.begin_nested():
            purpose = create_purpose(spec, NOTICES, by=None, now=now)
            if purpose.key != PURPOSE_KEY:
                # The key was taken between our read and the insert's key check.
                raise _Raced
    except (IntegrityError, _Raced):
        found = find_purpose(PURPOSE_KEY)
        if found is None:  # pragma: no cover (the other insert rolled back too)
            raise
        return found
    return purpose


def reminders_basis() -> LegalBasis:
    return LegalBasis(reminders_purpose().legal_basis)


def reminders_need_consent() -> bool:
    """Whether reminders rest on consent (then staff booking asks). Read only: no
    purpose yet means the default, legitimate interest."""
    found = find_purpose(PURPOSE_KEY)
    return found is not None and found.is_consent and not found.is_archived


def set_reminders_basis(basis: LegalBasis, *, actor: User | None) -> None:
    """The organisation's legal basis for reminders (consent, contract or legitimate
    interest); audited as a change of the purpose.

    Moving to consent ends (invalidates) the states recorded under the other basis:
    they record that a contract or interest applied, not that the client agreed."""
    basis = LegalBasis(basis)
    if basis not in ALLOWED_BASES:
        raise ValueError(f"reminders cannot rest on basis {basis.value!r}")
    purpose = reminders_purpose()
    old = LegalBasis(purpose.legal_basis)
    if old is basis:
        return
    spec = PurposeSpec(
        key=purpose.key,
        name=purpose.name,
        legal_basis=basis,
        retention_months=purpose.retention_months,
        retention_action=purpose.retention_action,
        validity_months=(purpose.validity_months or DEFAULT_VALIDITY_MONTHS)
        if basis is LegalBasis.CONSENT
        else None,
        warning_days=purpose.warning_days,
        channels=list(purpose.channels or []),
        description=purpose.description,
        legitimate_interest=purpose.legitimate_interest or LEGITIMATE_INTEREST,
        data_categories=purpose.data_categories,
        recipients=purpose.recipients,
    )
    update_purpose(purpose, spec, {}, by=actor)
    if basis is LegalBasis.CONSENT:
        now = now_utc(None)
        client_ids = list(
            db.session.scalars(
                select(ConsentState.client_id).where(
                    ConsentState.purpose_id == purpose.id, valid_condition(now)
                )
            )
        )
        for client_id in client_ids:
            record_event(
                client_id,
                purpose,
                EventKind.INVALIDATED,
                Method.STAFF,
                actor=actor,
                note="The legal basis for reminders changed to consent.",
                now=now,
            )


def _notice_for(purpose: ConsentPurpose) -> ConsentNotice | None:
    """The notice version in force in the organisation's language (else English, else
    any): what the client was told about reminders."""
    from crm.org.services import organisation

    notices = latest_notices(purpose.id)
    for language in (organisation().default_locale, "en"):
        if language in notices:
            return notices[language]
    return next(iter(notices.values()), None)


def record_reminders_basis(
    client: Client,
    *,
    method: Method,
    evidence: Evidence | None,
    actor: User | None,
    agreed: bool,
    now: datetime | None = None,
) -> bool:
    """Record that reminders may be sent to the client, when that holds: under contract
    or legitimate interest whenever no objection stands (withdrawn or refused: never
    granted again automatically); under consent only when the client `agreed`.
    Returns whether a new event was recorded."""
    now = now_utc(now)
    purpose = reminders_purpose(now)
    if purpose.is_archived:
        return False
    state = db.session.scalar(
        select(ConsentState).where(
            ConsentState.client_id == client.id, ConsentState.purpose_id == purpose.id
        )
    )
    if state is not None and is_valid(state.status, state.expires_at, now):
        return False
    if purpose.is_consent:
        if not agreed:
            return False
    elif state is not None and state.status in (
        ConsentStatus.WITHDRAWN.value,
        ConsentStatus.REFUSED.value,
    ):
        return False  # an objection stands
    notice = _notice_for(purpose)
    if notice is None:
        return False
    basis_note = {
        LegalBasis.CONTRACT.value: "Reminders under contract (booking).",
        LegalBasis.LEGITIMATE_INTEREST.value: "Reminders under legitimate interest (booking).",
    }.get(purpose.legal_basis, "Client agreed to reminders when booking.")
    try:
        record_event(
            client.id,
            purpose,
            EventKind.GIVEN,
            method,
            notice=notice,
            actor=actor,
            evidence=evidence,
            note=basis_note,
            now=now,
        )
    except ConsentError:
        return False
    return True


# --- planning the rows ------------------------------------------------------------------


def _zone():  # type: ignore[no-untyped-def]
    from crm.appointments.services import org_zone

    return org_zone()


def before_due_at(appointment: Appointment, service: Service) -> datetime | None:
    """When the day-before reminder is due: `reminder_hour`:00 local time,
    `reminder_days_before` days before the local start day (None: no such reminder)."""
    days = int(service.reminder_days_before or 0)
    if days <= 0:
        return None
    from crm.appointments.slots import to_instant

    zone = _zone()
    start_day = appointment.starts_at.astimezone(zone).date()
    hour = min(max(int(service.reminder_hour or 0), 0), 23)
    return to_instant(start_day - timedelta(days=days), time(hour, 0), zone)


def reachable_channels(service: Service, client: Client) -> list[str]:
    """The service's channels the client has an address for (SMS: and not opted out)."""
    found = []
    for channel in service.reminder_channels or []:
        has_email = channel == ReminderChannel.EMAIL.value and bool((client.email or "").strip())
        has_phone = (
            channel == ReminderChannel.SMS.value
            and bool((client.phone or "").strip())
            and client.sms_opt_out_at is None
        )
        if has_email or has_phone:
            found.append(channel)
    return found


def schedule_reminders(
    appointment: Appointment, now: datetime | None = None, *, confirm: bool = True
) -> list[Reminder]:
    """Create or refresh the appointment's reminder rows (idempotent: one row per kind
    and channel). A moved appointment moves its day-before rows and sets them back to
    scheduled (also one sent for the old time); a confirmation is planned only when
    `confirm` (at booking), so a move or a changed setting never sends one again.
    Returns the rows wanted now."""
    now = now_utc(now)
    existing = {
        (r.kind, r.channel): r
        for r in db.session.scalars(
            select(Reminder).where(Reminder.appointment_id == appointment.id)
        )
    }
    if not appointment.holds_time:
        cancel_reminders(appointment, "appointment cancelled")
        return []
    service = appointment.service
    channels = reachable_channels(service, appointment.client)
    wanted: dict[tuple[str, str], datetime] = {}
    if confirm and service.send_confirmation and appointment.starts_at > now:
        for channel in channels:
            if (
                channel == ReminderChannel.EMAIL.value
                and appointment.source == AppointmentSource.ONLINE.value
            ):
                continue  # the booking page sends its own confirmation with the .ics
            wanted[(ReminderKind.CONFIRMATION.value, channel)] = now
    before = before_due_at(appointment, service)
    if before is not None and now < before < appointment.starts_at:
        for channel in channels:
            wanted[(ReminderKind.BEFORE.value, channel)] = before
    rows = []
    for (kind, channel), due in wanted.items():
        row = existing.get((kind, channel))
        if row is None:
            row = Reminder(
                appointment_id=appointment.id,
                kind=kind,
                channel=channel,
                due_at=due,
                status=ReminderStatus.SCHEDULED.value,
                attempts=0,
                detail="",
            )
            db.session.add(row)
        elif kind == ReminderKind.BEFORE.value and (
            row.status in OPEN_REMINDER_STATUSES or _utc(row.due_at) != due
        ):
            if row.status == ReminderStatus.SENT.value:
                row.detail = "moved with the appointment; sent before for the old time"
            else:
                row.detail = ""
            row.due_at = due
            row.status = ReminderStatus.SCHEDULED.value
            row.claimed_at = None
            row.attempts = 0
        rows.append(row)
    for key, row in existing.items():
        # Day-before rows no longer wanted (the new due time has passed, the service
        # dropped the channel or the reminder): never sent for the new time.
        if (
            key not in wanted
            and row.kind == ReminderKind.BEFORE.value
            and row.status in OPEN_REMINDER_STATUSES
        ):
            row.status = ReminderStatus.CANCELLED.value
            row.claimed_at = None
            row.detail = "no longer due after a change"
    db.session.flush()
    return rows


def replan_service(service: Service, now: datetime | None = None) -> int:
    """Re-plan the day-before reminders of the service's upcoming appointments after
    its reminder settings changed. Returns how many appointments were looked at."""
    from crm.appointments.models import HOLDING_STATUSES

    now = now_utc(now)
    appointments = list(
        db.session.scalars(
            select(Appointment)
            .options(joinedload(Appointment.client))
            .where(
                Appointment.service_id == service.id,
                Appointment.starts_at > now,
                Appointment.status.in_(HOLDING_STATUSES),
            )
        )
    )
    for appointment in appointments:
        schedule_reminders(appointment, now, confirm=False)
    return len(appointments)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def cancel_reminders(appointment: Appointment, reason: str) -> int:
    """Every open reminder of the appointment -> cancelled. Returns how many."""
    result = db.session.execute(
        update(Reminder)
        .where(
            Reminder.appointment_id == appointment.id,
            Reminder.status.in_(OPEN_REMINDER_STATUSES),
        )
        .values(status=ReminderStatus.CANCELLED.value, claimed_at=None, detail=reason[:300])
        .execution_options(synchronize_session="fetch")
    )
    db.session.flush()
    return int(result.rowcount or 0)


# --- the SMS opt-out --------------------------------------------------------------------


def set_sms_opt_out(
    client: Client,
    opted_out: bool,
    *,
    actor: User | None = None,
    now: datetime | None = None,
) -> int:
    """Set or clear the client's SMS opt-out; audited. Turning it on cancels every open
    SMS reminder of the client at once and returns how many (turning it off does not
    revive them: later bookings and moves plan SMS again)."""
    now = now_utc(now)
    cancelled = 0
    if opted_out:
        if client.sms_opt_out_at is None:
            client.sms_opt_out_at = now
        appointment_ids = select(Appointment.id).where(Appointment.client_id == client.id)
        result = db.session.execute(
            update(Reminder)
            .where(
                Reminder.appointment_id.in_(appointment_ids),
                Reminder.channel == ReminderChannel.SMS.value,
                Reminder.status.in_(OPEN_REMINDER_STATUSES),
            )
            .values(status=ReminderStatus.CANCELLED.value, claimed_at=None, detail="SMS opt-out")
            .execution_options(synchronize_session="fetch")
        )
        cancelled = int(result.rowcount or 0)
    else:
        client.sms_opt_out_at = None
    db.session.flush()
    audit(
        "client.sms_opt_out" if opted_out else "client.sms_opt_in",
        target_type="client",
        target_id=client.id,
        client_id=client.id,
        details={"cancelled_reminders": cancelled} if opted_out else {},
        actor=actor,
    )
    return cancelled


def _stop_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt=STOP_SALT)


def stop_token(client_id: int) -> str:
    """A short signed token naming the client, for the SMS stop link."""
    return str(_stop_serializer().dumps(int(client_id)))


def client_for_stop_token(token: str) -> int | None:
    """The client id a stop token names; None when tampered or malformed."""
    if not token or len(token) > 100:
        return None
    try:
        value = _stop_serializer().loads(token)
    except (BadData, TypeError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stop_url(client_id: int) -> str:
    from crm.mailing.services import public_url

    return public_url("appointments.sms_stop", token=stop_token(client_id))


# --- the card ---------------------------------------------------------------------------


@dataclass
class ReminderView:
    kind: str
    channel: str
    status: str
    due_at: datetime
    sent_at: datetime | None


def reminders_by_appointment(appointment_ids: Iterable[int]) -> dict[int, list[ReminderView]]:
    """The reminder rows of these appointments (one query), for the card."""
    ids = list(set(appointment_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        select(
            Reminder.appointment_id,
            Reminder.kind,
            Reminder.channel,
            Reminder.status,
            Reminder.due_at,
            Reminder.sent_at,
        )
        .where(Reminder.appointment_id.in_(ids))
        .order_by(Reminder.appointment_id, Reminder.due_at, Reminder.channel)
    )
    found: dict[int, list[ReminderView]] = {}
    for appointment_id, kind, channel, status, due_at, sent_at in rows:
        found.setdefault(appointment_id, []).append(
            ReminderView(kind, channel, status, due_at, sent_at)
        )
    return found


CHANNEL_LABELS = {
    ReminderChannel.EMAIL.value: _l("Email"),
    ReminderChannel.SMS.value: _l("SMS"),
}
STATUS_LABELS = {
    ReminderStatus.SCHEDULED.value: _l("scheduled"),
    ReminderStatus.SENDING.value: _l("sending"),
    ReminderStatus.SENT.value: _l("sent"),
    ReminderStatus.SKIPPED.value: _l("skipped"),
    ReminderStatus.CANCELLED.value: _l("cancelled"),
    ReminderStatus.FAILED.value: _l("failed"),
}
