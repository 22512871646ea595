"""Online booking: what the public page offers, the client a booking belongs to, the
consent events it records, and the confirmation email.

Services change state and flush; the view commits once. The booking itself goes
through `crm.appointments.services.book`, whose lock must be the first statement of
its transaction on SQLite: `lock_for_booking` takes it before anything else is read,
so matching the client and booking happen under the one lock.
"""

from __future__ import annotations

import base64
import unicodedata
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from sqlalchemy import func, select

from crm.appointments import services as appointments
from crm.appointments.models import Appointment, Service
from crm.appointments.slots import Slot
from crm.audit.services import changes_details
from crm.audit.services import record as audit
from crm.auth.models import User
from crm.campaigns.models import SentMessage
from crm.clients.models import Client
from crm.consents.models import ConsentNotice, ConsentPurpose, EventKind, LegalBasis, Method
from crm.consents.services import Evidence, find_purpose, latest_notices, record_event
from crm.extensions import db
from crm.l10n import format_date_time
from crm.org.services import organisation
from crm.queue import actor, enqueue_after_commit
from crm.sqltypes import utcnow

# The purpose the marketing box asks consent for, when it exists (see marketing_purpose).
MARKETING_KEY = "newsletter"
WEEK = 7
# What the client card and the data export name as the source of a created client.
SOURCE = "online booking"


# --- what the page offers --------------------------------------------------------------


def bookable_services() -> list[Service]:
    """Active services listed on the public page."""
    return [s for s in appointments.active_services() if s.online_booking]


def get_bookable(service_id: int) -> Service | None:
    service = appointments.get_service(service_id)
    if service is None or service.archived or not service.online_booking:
        return None
    return service


def public_staff(service: Service) -> list[User]:
    return appointments.staff_for(service)


def staff_label(user: User, others: list[User] | None = None) -> str:
    """What the public sees of a staff member: the first name (the full name when two
    share it), never the email address that `display_name` falls back to."""
    from crm.appointments.ics import first_name

    first = first_name(user.full_name or "")
    if others and first and sum(1 for u in others if first_name(u.full_name or "") == first) > 1:
        return user.full_name
    return first or _("Staff member")


def week_slots(
    service: Service,
    first: date,
    staff_id: int | None,
    *,
    exclude_appointment: int | None = None,
    now: datetime | None = None,
) -> dict[date, list[Slot]]:
    """Free slots of the week from `first`, by local day, inside the booking window.
    For "anyone" (no staff id) one slot per start time: the earliest staff member in
    the engine's order stands for all; the booking picks whoever is still free."""
    slots = appointments.slots_for(
        service,
        first,
        first + timedelta(days=WEEK - 1),
        staff_ids=None if staff_id is None else [staff_id],
        now=now,
        honour_window=True,
        exclude_appointment=exclude_appointment,
    )
    zone = appointments.org_zone()
    by_day: dict[date, list[Slot]] = {}
    seen: set[datetime] = set()
    for slot in slots:
        if slot.starts_at in seen:
            continue
        seen.add(slot.starts_at)
        by_day.setdefault(slot.starts_at.astimezone(zone).date(), []).append(slot)
    return by_day


def free_staff_at(
    service: Service,
    starts_at: datetime,
    staff_id: int | None,
    *,
    exclude_appointment: int | None = None,
    now: datetime | None = None,
) -> list[int]:
    """The staff members (ids, in the engine's order) free for `service` at `starts_at`
    inside the booking window; just the one asked for, if free, when `staff_id` is set."""
    day = starts_at.astimezone(appointments.org_zone()).date()
    slots = appointments.slots_for(
        service,
        day - timedelta(days=1),  # a working interval that began the day before
        day,
        staff_ids=None if staff_id is None else [staff_id],
        now=now,
        honour_window=True,
        exclude_appointment=exclude_appointment,
    )
    found: list[int] = []
    for slot in slots:
        if slot.starts_at == starts_at and slot.staff_id not in found:
            found.append(slot.staff_id)
    return found


def privacy_notice_link() -> str:
    from flask import url_for

    return organisation().privacy_notice_url or url_for("org.privacy_notice")


# --- purposes and notices --------------------------------------------------------------


def marketing_purpose() -> ConsentPurpose | None:
    """The purpose of the marketing box: the active consent purpose "newsletter" if
    there is one, else the first active consent purpose (by name) that uses email,
    apart from reminders. None: the box is not shown at all."""
    found = find_purpose(MARKETING_KEY)
    if found is not None and not found.is_archived and found.is_consent:
        return found
    stmt = (
        select(ConsentPurpose)
        .where(
            ConsentPurpose.archived_at.is_(None),
            ConsentPurpose.legal_basis == LegalBasis.CONSENT.value,
            ConsentPurpose.key != "reminders",
        )
        .order_by(ConsentPurpose.name, ConsentPurpose.id)
    )
    for purpose in db.session.scalars(stmt):
        if "email" in (purpose.channels or []):
            return purpose
    return None


def notice_for(purpose: ConsentPurpose, language: str | None = None) -> ConsentNotice | None:
    """The purpose's notice in force in the page's language (else the organisation's,
    else English, else any): the text the visitor was shown and agreed to."""
    notices = latest_notices(purpose.id)
    language = language or str(get_locale() or "en")
    for candidate in (language, organisation().default_locale, "en"):
        if candidate in notices:
            return notices[candidate]
    return next(iter(notices.values()), None)


def reminders_need_consent() -> bool:
    """Whether reminders rest on consent (then the page asks with its own box). Read
    only: the purpose is created on first use by the booking itself."""
    from crm.appointments.reminders import PURPOSE_KEY

    purpose = find_purpose(PURPOSE_KEY)
    return purpose is not None and not purpose.is_archived and purpose.is_consent


# --- the client ------------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """The matching form, as the suppression list uses it: NFC, trimmed, lower case."""
    return unicodedata.normalize("NFC", (email or "").strip()).lower()


def find_client(email: str, phone: str) -> Client | None:
    """The existing client with this email (any case), else with this phone (E.164);
    the oldest card when several match."""
    if email:
        found = db.session.scalar(
            select(Client)
            .where(func.lower(Client.email) == normalise_email(email))
            .order_by(Client.id)
            .limit(1)
        )
        if found is not None:
            return found
    if phone:
        return db.session.scalar(
            select(Client).where(Client.phone == phone).order_by(Client.id).limit(1)
        )
    return None


@dataclass
class ClientMatch:
    client: Client
    created: bool
    # Values the visitor typed that differ from the card's: kept on the appointment's
    # notes for staff, never written over the card.
    differing: dict[str, str] = field(default_factory=dict)


FIELD_LABELS = {
    "first_name": "first name",
    "last_name": "last name",
    "email": "email",
    "phone": "phone",
    "street": "street",
    "postal_code": "postal code",
    "city": "city",
}


def match_or_create_client(values: dict[str, str]) -> ClientMatch:
    """The client the booking is for: matched by email, else phone, or created (no
    owner). An existing card only gains values for its empty fields; a restricted one
    is not changed at all. Audited either way."""
    values = {k: v for k, v in values.items() if v}
    client = find_client(values.get("email", ""), values.get("phone", ""))
    if client is None:
        client = Client(custom={}, owner_id=None, **values)
        client.refresh_search_text()
        db.session.add(client)
        db.session.flush()
        audit(
            "client.create",
            target_type="client",
            target_id=client.id,
            client_id=client.id,
            details={
                "source": SOURCE,
                **changes_details({k: (None, v) for k, v in values.items()}),
            },
        )
        return ClientMatch(client, created=True)
    changes: dict[str, tuple[Any, Any]] = {}
    differing: dict[str, str] = {}
    for name, value in values.items():
        old = getattr(client, name) or ""
        if name == "email" and normalise_email(old) == normalise_email(value):
            continue
        if not old and client.restricted_at is None:
            changes[name] = (old, value)
            setattr(client, name, value)
        elif old != value:
            differing[name] = value
    if changes:
        client.refresh_search_text()
        db.session.flush()
        audit(
            "client.update",
            target_type="client",
            target_id=client.id,
            client_id=client.id,
            details={"source": SOURCE, **changes_details(changes)},
        )
    return ClientMatch(client, created=False, differing=differing)


def differing_note(differing: dict[str, str]) -> str:
    """A line for the appointment's notes (staff read it; in the organisation's
    language of record, English, like other system notes)."""
    if not differing:
        return ""
    parts = "; ".join(f"{FIELD_LABELS.get(k, k)} “{v}”" for k, v in differing.items())
    return f"Given online, differs from the card (not saved): {parts}"


# --- booking ---------------------------------------------------------------------------


def lock_for_booking(staff_id: int) -> None:
    """The booking lock as the first statement of a fresh transaction (see module)."""
    appointments.lock_staff([staff_id])


@dataclass
class Consents:
    marketing: bool
    reminders: bool


def record_consents(
    client: Client,
    consents: Consents,
    evidence: Evidence,
    *,
    marketing: ConsentPurpose | None,
    now: datetime | None = None,
) -> None:
    """The consent ledger's part of a booking: the marketing box (only when ticked) and
    the reminders basis (the reminders module decides what that records)."""
    from crm.appointments.reminders import record_reminders_basis

    if consents.marketing and marketing is not None:
        notice = notice_for(marketing)
        if notice is not None:
            record_event(
                client.id,
                marketing,
                EventKind.GIVEN,
                Method.WEB_FORM,
                notice=notice,
                evidence=evidence,
                note="Ticked on the online booking page.",
                now=now,
            )
    record_reminders_basis(
        client,
        method=Method.WEB_FORM,
        evidence=evidence,
        actor=None,
        agreed=consents.reminders,
        now=now,
    )


# --- the confirmation email ------------------------------------------------------------


def place_of(appointment: Appointment) -> str:
    service = appointment.service
    return service.location or service.online_url or ""


def confirmation_email(appointment: Appointment, manage_link: str) -> tuple[str, str]:
    """(subject, plain text) of the booking confirmation, in the language in force."""
    from crm.appointments.ics import first_name

    org = organisation()
    client = appointment.client
    service = appointment.service
    when = format_date_time(appointment.starts_at)
    subject = _("Booked: %(service)s on %(when)s", service=service.name, when=when)
    name = f"{client.first_name} {client.last_name}".strip()
    lines = [
        _("Hello %(name)s,", name=name) if name else _("Hello,"),
        "",
        _("your appointment is booked:"),
        "",
        f"    {service.name}",
        f"    {when}",
    ]
    place = place_of(appointment)
    if place:
        lines.append(f"    {place}")
    staff = first_name(appointment.staff.full_name or "")
    if staff:
        lines.append("    " + _("with %(name)s", name=staff))
    lines += [
        "",
        _("The attached calendar file adds it to your calendar."),
        "",
        _("To see, move or cancel your booking:"),
        "",
        f"    {manage_link}",
        "",
    ]
    if service.cancel_cutoff_hours:
        lines += [
            _(
                "Changes online are possible until %(hours)s hours before the start.",
                hours=service.cancel_cutoff_hours,
            ),
            "",
        ]
    lines.append(org.legal_name or org.name)
    if org.privacy_contact:
        lines.append(_("Questions about your data: %(email)s", email=org.privacy_contact))
    return subject, "\n".join(lines) + "\n"


def build_confirmation(appointment: Appointment, manage_link: str) -> EmailMessage | None:
    """The confirmation email with the .ics attached; None without an address."""
    from crm.appointments.ics import appointment_ics
    from crm.mail import build_message

    to = appointment.client.email
    if not to:
        return None
    subject, text = confirmation_email(appointment, manage_link)
    message = build_message(to, subject, text)
    message.add_attachment(
        appointment_ics(appointment),
        maintype="text",
        subtype="calendar",
        filename="appointment.ics",
        # Bytes in base64 keep the file exactly as built (CRLF lines, UTF-8).
        params={"method": "PUBLISH", "charset": "utf-8"},
    )
    return message


def send_confirmation(appointment: Appointment, manage_link: str, language: str) -> bool:
    """Build the confirmation now (in the visitor's language) and send it once the
    booking commits; the worker stores it on the card when it went out."""
    with force_locale(language):
        message = build_confirmation(appointment, manage_link)
    if message is None:
        return False
    raw = base64.b64encode(bytes(message)).decode("ascii")
    enqueue_after_commit(send_booking_email, appointment.client_id, raw)
    return True


@actor(max_retries=5, min_backoff=10_000)
def send_booking_email(client_id: int, raw_b64: str) -> None:
    """Deliver one booking email and store it as sent (the card's Emails section and
    the data export list it). Idempotent: a message already stored is not sent again;
    nothing is sent to a client erased meanwhile."""
    from crm.mail import deliver

    raw = base64.b64decode(raw_b64)
    message = message_from_bytes(raw, policy=email_policy.default)
    message_id = str(message.get("Message-ID", ""))[:255]
    if db.session.get(Client, client_id) is None:
        return
    if db.session.scalar(
        select(SentMessage.id).where(
            SentMessage.client_id == client_id, SentMessage.message_id == message_id
        )
    ):
        return
    deliver(message)  # type: ignore[arg-type]
    db.session.add(
        SentMessage(
            client_id=client_id,
            campaign_id=None,
            subject=str(message.get("Subject", ""))[:255],
            email=str(message.get("To", ""))[:254],
            message_id=message_id,
            sent_at=utcnow(),
            # Stored blocks, as campaigns store theirs (SentMessage.eml reads it).
            raw=zlib.compress(raw, 0),
        )
    )
    db.session.commit()


# --- the manage page -------------------------------------------------------------------


def change_deadline(appointment: Appointment) -> datetime:
    return appointment.starts_at - timedelta(hours=appointment.service.cancel_cutoff_hours or 0)


def can_change(appointment: Appointment, now: datetime | None = None) -> bool:
    """Whether the client may still cancel or move it online."""
    now = now or utcnow()
    return appointment.holds_time and now < change_deadline(appointment)
