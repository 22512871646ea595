"""iCalendar (RFC 5545) for appointments: the client's attachment and staff feeds.

Times are written in the organisation's zone with a TZID and a matching VTIMEZONE,
so a phone set to another zone still shows the visit at the right instant, and a
calendar that ignores VTIMEZONE can still resolve the well-known Olson name.

What an event shows is data minimisation in practice: a staff feed lives on phones
and in cloud calendars outside the CRM, so it carries at most the client's first name
(organisation setting) and never a surname, email, phone or notes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import icalendar
from flask import current_app

from crm.appointments.models import Appointment, AppointmentStatus, FeedDetail
from crm.l10n import gettext as _
from crm.org.services import organisation
from crm.sqltypes import utcnow

if TYPE_CHECKING:
    from crm.auth.models import User

PRODID = "-//GDPR CRM//Appointments//EN"


def _zone() -> ZoneInfo:
    # Imported here: services imports a lot, and this module is imported by mailers.
    from crm.appointments.services import org_zone

    return org_zone()


def _host() -> str:
    base = current_app.config.get("CRM_BASE_URL") or ""
    return urlsplit(base).hostname or "localhost"


def _aware(value: datetime) -> datetime:
    """Stored instants are UTC; SQLite hands them back naive."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _when(instant: datetime, zone: ZoneInfo) -> datetime:
    """The instant as local time in the zone, for a TZID; in UTC when that local time
    is the second one of the hour repeated when clocks go back: RFC 5545 reads an
    ambiguous local time as its first occurrence, an hour too early."""
    local = _aware(instant).astimezone(zone)
    return local.astimezone(UTC) if local.fold else local


def first_name(full_name: str) -> str:
    """The first word of a person's name ('Anna Nowak' -> 'Anna')."""
    parts = (full_name or "").split()
    return parts[0] if parts else ""


def event_uid(appointment: Appointment) -> str:
    """Stable across edits, so a reschedule replaces the event instead of adding one."""
    return f"appointment-{appointment.id}@{_host()}"


def _sequence(appointment: Appointment) -> int:
    # Seconds since creation of the last change: grows with every update of the row
    # (reschedule, cancel), which is what makes calendars replace their copy.
    created = appointment.created_at
    updated = appointment.updated_at
    if created is None or updated is None:
        return 0
    return max(0, int((_aware(updated) - _aware(created)).total_seconds()))


def _place(appointment: Appointment) -> str:
    service = appointment.service
    return (service.location or service.online_url or "").strip()


def _staff_summary(appointment: Appointment, detail: FeedDetail) -> str:
    service = appointment.service.name
    client = appointment.client
    name = first_name(client.first_name) if client is not None else ""
    # A restricted client (Art. 18) is not to be used: never show their name.
    if detail is FeedDetail.FIRST_NAME and name and client.restricted_at is None:
        return f"{name}: {service}"
    return _("Booked: %(service)s", service=service)


def appointment_event(
    appointment: Appointment,
    *,
    detail: FeedDetail | None = None,
    for_client: bool = False,
) -> icalendar.Event:
    """One VEVENT for the appointment, for the client's copy or a staff feed.

    `detail` applies to staff feeds (default: the organisation's setting)."""
    zone = _zone()
    event = icalendar.Event()
    event.add("uid", event_uid(appointment))
    event.add("dtstamp", utcnow())
    if appointment.created_at is not None:
        event.add("created", _aware(appointment.created_at))
    if appointment.updated_at is not None:
        event.add("last-modified", _aware(appointment.updated_at))
    event.add("sequence", _sequence(appointment))
    event.add("dtstart", _when(appointment.starts_at, zone))
    event.add("dtend", _when(appointment.ends_at, zone))
    cancelled = appointment.status == AppointmentStatus.CANCELLED.value
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    # A cancelled visit no longer blocks the time in free/busy views.
    event.add("transp", "TRANSPARENT" if cancelled else "OPAQUE")
    place = _place(appointment)
    if place:
        event.add("location", place)
    service = appointment.service
    if for_client:
        event.add("summary", f"{service.name} \u2013 {organisation().name}")
        lines = []
        staff = first_name(appointment.staff.full_name) if appointment.staff else ""
        if staff:
            lines.append(_("With: %(name)s", name=staff))
        if place:
            lines.append(_("Where: %(place)s", place=place))
        if lines:
            event.add("description", "\n".join(lines))
        if service.online_url:
            event.add("url", service.online_url)
    else:
        if detail is None:
            detail = feed_detail()
        event.add("summary", _staff_summary(appointment, detail))
    return event


def feed_detail() -> FeedDetail:
    """The organisation's setting; an unknown stored value shows the least."""
    try:
        return FeedDetail(organisation().calendar_feed_detail)
    except ValueError:
        return FeedDetail.BOOKED


@lru_cache(maxsize=16)
def _vtimezone_ical(tzid: str, first_year: int, last_year: int) -> bytes:
    # Building a VTIMEZONE walks the zone's transitions: slow enough to cache. Only the
    # years the calendar covers, so the feed is not padded with 1970..2038 rules.
    zone: tzinfo = ZoneInfo(tzid)
    component = icalendar.Timezone.from_tzinfo(
        zone, tzid=tzid, first_date=date(first_year, 1, 1), last_date=date(last_year + 1, 1, 1)
    )
    return component.to_ical()


def _add_timezone(calendar: icalendar.Calendar, events: list[icalendar.Event]) -> None:
    zone = _zone()
    tzid = zone.key
    if tzid == "UTC" or not events:
        return  # UTC times are written with a Z and need no VTIMEZONE
    years = [e.decoded(name).year for e in events for name in ("dtstart", "dtend")]
    try:
        ical = _vtimezone_ical(tzid, min(years) - 1, max(years) + 1)
    except ValueError:
        calendar.add_missing_timezones()  # let the library try its own lookup
        return
    calendar.subcomponents.insert(0, icalendar.Timezone.from_ical(ical))


def _calendar(events: list[icalendar.Event], *, method: str | None) -> icalendar.Calendar:
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    if method:
        calendar.add("method", method)
    for event in events:
        calendar.add_component(event)
    _add_timezone(calendar, events)
    return calendar


def appointment_ics(appointment: Appointment) -> bytes:
    """The client's copy of one appointment, for an email attachment (text/calendar).

    METHOD:PUBLISH, not REQUEST: REQUEST is an iTIP invitation that needs ORGANIZER and
    ATTENDEE (the client's email in the file) and makes mail programs offer
    Accept/Decline replies that nobody here reads. PUBLISH is "add this to your
    calendar"; the stable UID and a higher SEQUENCE make a later copy (reschedule,
    STATUS:CANCELLED) replace the first one."""
    event = appointment_event(appointment, for_client=True)
    return _calendar([event], method="PUBLISH").to_ical()


def feed_calendar(user: User, appointments: list[Appointment], *, detail: FeedDetail) -> bytes:
    """A staff member's subscription feed: their appointments, minimal detail."""
    # As in the calendar: a client outside the user's scope is just "Booked".
    from crm.appointments.policy import visible_client_ids

    visible = (
        visible_client_ids(user, {a.client_id for a in appointments})
        if detail is not FeedDetail.BOOKED
        else set()
    )
    events = [
        appointment_event(a, detail=detail if a.client_id in visible else FeedDetail.BOOKED)
        for a in appointments
    ]
    # No METHOD: a subscribed feed is a plain calendar, not an iTIP message.
    calendar = _calendar(events, method=None)
    name = f"{organisation().name}: {first_name(user.full_name) or _('Appointments')}"
    calendar.add("name", name)
    calendar.add("x-wr-calname", name)
    # How often subscribed clients should poll (RFC 7986 and the older Apple name).
    calendar.add("refresh-interval", timedelta(hours=1), parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", "PT1H")
    return calendar.to_ical()
