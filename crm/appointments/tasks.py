"""Sending appointment reminders: the periodic sweep and the actor that sends.

The sweep claims due rows (scheduled -> sending, with the claim time) in batches and
enqueues one message per batch after its commit. Claiming is one UPDATE per batch
whose subquery picks scheduled, due rows: on PostgreSQL `FOR UPDATE SKIP LOCKED`, so
two overlapping sweeps pick disjoint rows; SQLite has one writer at a time, so the
statement's read and write see no other writer. RETURNING names the rows won.

The actor sends only rows still in `sending` under the claim it was given, asks at
send time whether the message may go out (appointment still on and ahead, consent
ledger via `may_contact`, opt-out, suppression), then takes the row for that one send
(a conditional update to a claim of its own, committed before the network call): a
message delivered twice, or two workers with the same batch, find the claim changed
and leave the row. Each row is marked sent right after its send, in its own commit.
Rows of a worker that died are given back after CLAIM_TIMEOUT, and marked failed
after MAX_CLAIMS claims. A crash between a send and its commit is the one case that
sends again (after the timeout); the SMS reference stays "reminder-<id>", so a gateway
that drops duplicates drops it.
"""

from __future__ import annotations

import logging
import smtplib
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select, text, update
from sqlalchemy.orm import joinedload

from crm.appointments.models import (
    Appointment,
    Reminder,
    ReminderChannel,
    ReminderKind,
    ReminderStatus,
)
from crm.extensions import db
from crm.queue import actor, enqueue_after_commit
from crm.scheduler import periodic
from crm.sms import ACTOR_RETRIES, SmsPermanentError, SmsRefused, SmsTemporaryError

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
# Longer than an actor's retries take (ACTOR_RETRIES with at most MAX_BACKOFF each).
CLAIM_TIMEOUT = timedelta(minutes=60)
MAX_CLAIMS = 3
MAX_BACKOFF_MS = 5 * 60 * 1000
QUEUE = "reminders"

SCHEDULED = ReminderStatus.SCHEDULED.value
SENDING = ReminderStatus.SENDING.value


class MailTemporaryError(Exception):
    """The mail server could not take the message now; worth trying again."""


def _retry_when(retries: int, exc: BaseException) -> bool:
    return isinstance(exc, SmsTemporaryError | MailTemporaryError) and retries < ACTOR_RETRIES


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    from crm.consents.services import now_utc

    return now_utc(now)


# --- the sweep --------------------------------------------------------------------------


def _postgres() -> bool:
    return db.session.connection().dialect.name == "postgresql"


def claim_batch(now: datetime, size: int = CLAIM_BATCH) -> list[int]:
    """Claim up to `size` due rows for this sweep; returns the ids won."""
    table = Reminder.__table__
    due = (
        select(table.c.id)
        .where(table.c.status == SCHEDULED, table.c.due_at <= now)
        .order_by(table.c.due_at)
        .limit(size)
    )
    if _postgres():
        # Rows another sweep holds are skipped; a row locked here is re-checked against
        # the subquery's conditions once locked, so it is still scheduled when won.
        due = due.with_for_update(skip_locked=True)
    # No second status test outside the subquery: on SQLite the statement runs under
    # the database's one write lock, so nothing changes the rows between its read and
    # its write; with it both planners walked the status index again for every batch.
    stmt = (
        update(table)
        .where(table.c.id.in_(due.scalar_subquery()))
        .values(status=SENDING, claimed_at=now, attempts=table.c.attempts + 1, updated_at=now)
        .returning(table.c.id)
    )
    return sorted(db.session.execute(stmt).scalars())


def give_back(now: datetime) -> tuple[int, int]:
    """Rows claimed longer than CLAIM_TIMEOUT ago (their worker died or gave up): back
    to scheduled, or failed after MAX_CLAIMS claims. Returns (given back, failed)."""
    table = Reminder.__table__
    stale = (table.c.status == SENDING) & (table.c.claimed_at < now - CLAIM_TIMEOUT)
    failed = db.session.execute(
        update(table)
        .where(stale, table.c.attempts >= MAX_CLAIMS)
        .values(
            status=ReminderStatus.FAILED.value,
            claimed_at=None,
            detail="not sent after several attempts",
            updated_at=now,
        )
    ).rowcount
    returned = db.session.execute(
        update(table)
        .where(stale, table.c.attempts < MAX_CLAIMS)
        .values(status=SCHEDULED, claimed_at=None, updated_at=now)
    ).rowcount
    return int(returned or 0), int(failed or 0)


def sweep(now: datetime | None = None, *, batch: int = CLAIM_BATCH) -> dict[str, int]:
    """Claim every due reminder and enqueue one send per batch (after the commit,
    which the caller or the job runner does)."""
    now = _now(now)
    returned, failed = give_back(now)
    claimed = batches = 0
    while True:
        ids = claim_batch(now, batch)
        if not ids:
            break
        enqueue_after_commit(send_reminders, ids, now.isoformat())
        claimed += len(ids)
        batches += 1
        if len(ids) < batch:
            break
    db.session.flush()
    return {"claimed": claimed, "batches": batches, "given_back": returned, "failed": failed}


@periodic("appointments.reminders", every=timedelta(minutes=1))
def reminders_sweep(now: datetime) -> dict[str, int]:
    """Send due appointment reminders (claim them; workers send)."""
    return sweep(now)


# --- sending ----------------------------------------------------------------------------


@actor(
    queue_name=QUEUE,
    retry_when=_retry_when,
    min_backoff=10_000,
    max_backoff=MAX_BACKOFF_MS,
    time_limit=30 * 60 * 1000,
)
def send_reminders(ids: list[int], claim: str) -> None:
    """Send one claimed batch. A nudge: rows not held under `claim` are left alone,
    so a duplicate or late message sends nothing twice."""
    deliver_claimed([int(i) for i in ids], datetime.fromisoformat(claim))


def deliver_claimed(ids: list[int], claim: datetime, now: datetime | None = None) -> Counter[str]:
    """Send the rows of a batch one by one (`now`: the send-time clock, for tests).
    Temporary trouble with one row does not hold up the others; it is raised at the
    end, so the actor retries the batch (rows done by then are no longer held)."""
    claim = _now(claim)
    outcomes: Counter[str] = Counter()
    trouble: Exception | None = None
    for reminder_id in ids:
        try:
            outcomes[deliver_one(reminder_id, claim, now)] += 1
        except (SmsTemporaryError, MailTemporaryError) as exc:
            outcomes["retry"] += 1
            trouble = exc
    if trouble is not None:
        raise trouble
    return outcomes


def _move_claim(row_id: int, held: datetime, new: datetime, detail: str | None = None) -> bool:
    """Replace the claim on a row still sending under `held`; False when it is not."""
    values: dict[str, Any] = {"claimed_at": new}
    if detail is not None:
        values["detail"] = detail[:300]
    result = db.session.execute(
        update(Reminder.__table__)
        .where(
            Reminder.__table__.c.id == row_id,
            Reminder.__table__.c.status == SENDING,
            Reminder.__table__.c.claimed_at == held,
        )
        .values(**values)
    )
    return bool(result.rowcount)


def _write_lock() -> None:
    """SQLite: take the write lock as the first statement, so this transaction's later
    write cannot fail against a writer that committed after our reads."""
    connection = db.session.connection()
    if connection.dialect.name == "sqlite":
        connection.execute(text("DELETE FROM appointment_reminders WHERE 1 = 0"))


def _held(reminder_id: int, claim: datetime) -> Reminder | None:
    stmt = (
        select(Reminder)
        .options(
            joinedload(Reminder.appointment).options(
                joinedload(Appointment.service),
                joinedload(Appointment.client),
                joinedload(Appointment.staff),
            )
        )
        .where(Reminder.id == reminder_id)
        .execution_options(populate_existing=True)
    )
    if _postgres():
        stmt = stmt.with_for_update(of=Reminder)
    row = db.session.scalar(stmt)
    if row is None or row.status != SENDING or _utc(row.claimed_at) != claim:
        return None
    return row


def _finish(row_id: int, claim: datetime, status: str, detail: str, now: datetime) -> bool:
    """Move the held row to its final status; False when the claim was lost meanwhile."""
    values: dict[str, Any] = {"status": status, "detail": detail[:300], "updated_at": now}
    if status == ReminderStatus.SENT.value:
        values["sent_at"] = now
    result = db.session.execute(
        update(Reminder.__table__)
        .where(
            Reminder.__table__.c.id == row_id,
            Reminder.__table__.c.status == SENDING,
            Reminder.__table__.c.claimed_at == claim,
        )
        .values(**values)
    )
    return bool(result.rowcount)


def why_not(row: Reminder, now: datetime) -> str:
    """Why this reminder must not go out now ("" when it may)."""
    from crm.appointments.reminders import before_due_at, reminders_purpose
    from crm.consents.policy import may_contact
    from crm.mailing.services import is_phone_suppressed, is_suppressed

    appointment = row.appointment
    if appointment is None or not appointment.holds_time:
        return "appointment cancelled"
    if appointment.starts_at <= now:
        return "appointment already begun"
    if row.kind == ReminderKind.BEFORE.value:
        expected = before_due_at(appointment, appointment.service)
        if expected is None or _utc(row.due_at) != expected:
            return "appointment moved"
    client = appointment.client
    if client.restricted_at is not None:
        return "processing restricted"
    if row.channel == ReminderChannel.SMS.value:
        if client.sms_opt_out_at is not None:
            return "SMS opt-out"
        if not (client.phone or "").strip():
            return "no phone number"
        if is_phone_suppressed(client.phone):
            return "phone number suppressed"
    else:
        if not (client.email or "").strip():
            return "no email address"
        if is_suppressed(client.email):
            return "email address suppressed"
    if not may_contact(client, reminders_purpose(), row.channel, now=now):
        return "no valid basis for reminders (objection, withdrawn or expired consent)"
    return ""


def deliver_one(reminder_id: int, claim: datetime, now: datetime | None = None) -> str:
    """Check, send and mark one held reminder. Returns the outcome: sent, skipped,
    failed, or "not held" (another claim, or done already)."""
    now = _now(now)
    _write_lock()
    row = _held(reminder_id, claim)
    if row is None:
        db.session.rollback()
        return "not held"
    row_id = row.id
    reason = why_not(row, now)
    if reason:
        _finish(row_id, claim, ReminderStatus.SKIPPED.value, reason, now)
        db.session.commit()
        return "skipped"
    is_sms = row.channel == ReminderChannel.SMS.value
    outgoing: Any = sms_message(row) if is_sms else email_message(row)
    client_id, address = row.appointment.client_id, row.appointment.client.email
    # Take the row for this one send: a second worker with the same claim (a message
    # delivered twice) then finds the claim changed and leaves the row alone. The
    # commit lets go of the locks (on SQLite, the database's) while the network works.
    mine = max(now, claim) + timedelta(microseconds=1)
    if not _move_claim(row_id, claim, mine):
        db.session.rollback()
        return "not held"
    db.session.commit()
    try:
        if is_sms:
            from crm.sms import send_sms

            send_sms(outgoing)
        else:
            _deliver_email(outgoing.message)
    except (SmsRefused, SmsPermanentError, _MailRefused) as exc:
        db.session.rollback()
        _write_lock()
        _finish(row_id, mine, ReminderStatus.FAILED.value, str(exc), now)
        db.session.commit()
        return "failed"
    except (SmsTemporaryError, MailTemporaryError) as exc:
        # Back under the batch's claim, so the actor's retry finds it again.
        db.session.rollback()
        _write_lock()
        _move_claim(row_id, mine, claim, detail=str(exc))
        db.session.commit()
        raise
    _write_lock()
    if _finish(row_id, mine, ReminderStatus.SENT.value, "", now) and isinstance(
        outgoing, OutgoingEmail
    ):
        _store_email(client_id, address, outgoing, now)
    db.session.commit()
    return "sent"


# --- the messages -----------------------------------------------------------------------


def _language() -> str:
    from crm.org.services import organisation

    return organisation().default_locale or "en"


def _when(appointment: Appointment) -> str:
    from crm.l10n import format_date_time

    return format_date_time(appointment.starts_at)


def _place(appointment: Appointment) -> str:
    service = appointment.service
    if service.location:
        return service.location
    if service.online_url:
        return _("online")
    return ""


def sms_text(row: Reminder) -> str:
    """The SMS body: the business, the service, local date and time, the place, and
    how to stop SMS; about the appointment only. When that is longer than the SMS
    length limit, the place goes first, then the service name is shortened."""
    from crm.appointments.reminders import stop_url
    from crm.org.services import organisation
    from crm.sms import compose, measure

    appointment = row.appointment
    limit = max(1, int(current_app.config.get("CRM_SMS_MAX_SEGMENTS") or 3))
    business = organisation().name
    confirmation = row.kind == ReminderKind.CONFIRMATION.value
    with force_locale(_language()):
        when = _when(appointment)
        stop = _("Stop SMS: %(url)s", url=stop_url(appointment.client_id))
        service = appointment.service.name
        place = _place(appointment)
        text = ""
        for _attempt in range(8):
            values = {"service": service, "when": when, "place": place}
            if confirmation:
                body = (
                    _("Booked: %(service)s, %(when)s, %(place)s.", **values)
                    if place
                    else _("Booked: %(service)s, %(when)s.", **values)
                )
            else:
                body = (
                    _("Reminder: %(service)s, %(when)s, %(place)s.", **values)
                    if place
                    else _("Reminder: %(service)s, %(when)s.", **values)
                )
            text = compose(body, stop, business)
            if measure(text).segments <= limit:
                break
            if place:
                place = ""
            elif len(service) > 12:
                service = service[: max(10, len(service) // 2)].rstrip(" …") + "…"
            else:
                break  # as short as it gets: the sender reports it as too long
    return text


def sms_message(row: Reminder) -> Any:
    from crm.sms import SmsMessage

    return SmsMessage(
        to=row.appointment.client.phone, body=sms_text(row), reference=f"reminder-{row.id}"
    )


@dataclass
class OutgoingEmail:
    message: Any  # email.message.EmailMessage
    subject: str


class _MailRefused(Exception):
    """The mail server refused the message for good."""


def _manage_link(appointment: Appointment) -> str:
    try:
        from crm.booking.links import manage_url
    except ImportError:
        return ""
    try:
        return str(manage_url(appointment))
    except Exception:  # a link is a convenience; the reminder goes out without it
        log.warning("no manage link for appointment %s", appointment.id, exc_info=True)
        return ""


def email_texts(row: Reminder) -> tuple[str, str]:
    """(subject, text) of a reminder email, in the organisation's language."""
    from crm.org.services import organisation

    appointment = row.appointment
    client = appointment.client
    service = appointment.service
    org = organisation()
    business = org.name
    with force_locale(_language()):
        when = _when(appointment)
        confirmation = row.kind == ReminderKind.CONFIRMATION.value
        if confirmation:
            subject = _("Your appointment: %(service)s, %(when)s", service=service.name, when=when)
        else:
            subject = _("Reminder: %(service)s, %(when)s", service=service.name, when=when)
        name = f"{client.first_name} {client.last_name}".strip()
        lines = [_("Hello %(name)s,", name=name) if name else _("Hello,"), ""]
        lines.append(
            _("%(business)s confirms your appointment:", business=business)
            if confirmation
            else _("%(business)s reminds you of your appointment:", business=business)
        )
        lines += ["", f"    {service.name}", f"    {when}"]
        if service.location:
            lines.append(f"    {service.location}")
        if service.online_url:
            lines.append(f"    {service.online_url}")
        staff = appointment.staff
        if staff is not None:
            lines.append(
                "    " + _("With %(name)s", name=staff.full_name or staff.email.split("@")[0])
            )
        lines.append("")
        link = _manage_link(appointment)
        if link:
            lines += [_("To view, move or cancel it:"), f"    {link}", ""]
        else:
            lines += [_("To move or cancel it, please contact us."), ""]
        if confirmation:
            lines += [_("The attached file adds the appointment to your calendar."), ""]
        lines.append(org.legal_name or business)
    return subject, "\n".join(lines) + "\n"


def email_message(row: Reminder) -> OutgoingEmail:
    from crm.mail import build_message

    subject, body = email_texts(row)
    message = build_message(row.appointment.client.email, subject, body)
    if row.kind == ReminderKind.CONFIRMATION.value:
        from crm.appointments.ics import appointment_ics

        message.add_attachment(
            appointment_ics(row.appointment),
            maintype="text",
            subtype="calendar",
            filename="appointment.ics",
            params={"method": "PUBLISH"},
        )
    return OutgoingEmail(message, subject)


def _deliver_email(message: Any) -> None:
    from crm.mail import deliver

    try:
        deliver(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise _MailRefused(f"recipient refused: {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:
            raise _MailRefused(f"SMTP {exc.smtp_code}") from exc
        raise MailTemporaryError(f"SMTP {exc.smtp_code}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise MailTemporaryError(f"mail server unavailable: {type(exc).__name__}") from exc


def _store_email(client_id: int, address: str, outgoing: OutgoingEmail, now: datetime) -> None:
    """The email as sent, for the card's Emails section and the data export."""
    from crm.campaigns.models import SentMessage

    message = outgoing.message
    db.session.add(
        SentMessage(
            client_id=client_id,
            campaign_id=None,
            subject=outgoing.subject[:255],
            email=address[:254],
            message_id=str(message["Message-ID"] or "")[:255],
            sent_at=now,
            # The column's format (see SentMessage.eml): zlib, stored blocks.
            raw=zlib.compress(bytes(message), 0),
        )
    )
    db.session.flush()
