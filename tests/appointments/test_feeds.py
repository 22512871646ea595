"""Calendar files and staff feeds, each parsed with icalendar and with vobject."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject
from sqlalchemy import select

from crm.appointments import feeds, ics
from crm.appointments.models import Appointment, AppointmentStatus, CalendarFeed, FeedDetail
from crm.audit.models import AuditEntry
from crm.auth.models import User
from crm.extensions import db
from crm.org.services import organisation_for_update
from crm.sqltypes import utcnow
from tests.appointments.factories import admin_id, make_service
from tests.conftest import login, make_client, make_user

WARSAW = ZoneInfo("Europe/Warsaw")
PRIVATE = ("Müller", "jm@example.com", "600100200", "latex")


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


def next_change(month: int) -> date:
    """The next last Sunday of `month` (a DST change in Europe), inside the feed's year."""
    today = datetime.now(WARSAW).date()
    day = last_sunday(today.year, month)
    return day if day > today + timedelta(days=1) else last_sunday(today.year + 1, month)


def _appointment(staff_id, service_id, client_id, start, minutes=60, **extra):  # type: ignore[no-untyped-def]
    appointment = Appointment(
        service_id=service_id,
        staff_id=staff_id,
        client_id=client_id,
        starts_at=start.astimezone(UTC),
        # In UTC: wall-clock arithmetic would lose or gain the DST hour.
        ends_at=start.astimezone(UTC) + timedelta(minutes=minutes),
        status=AppointmentStatus.BOOKED.value,
        notes="Allergic to latex",
        **extra,
    )
    db.session.add(appointment)
    db.session.commit()
    return appointment.id


@pytest.fixture
def data(app, admin):  # type: ignore[no-untyped-def]
    """Four appointments of the admin around both DST changes, one cancelled, and one of
    another staff member."""
    with app.app_context():
        staff_id = admin_id()
        service = make_service([staff_id], name="Strzyżenie", location="ul. Piotrkowska 1, Łódź")
        client = make_client(
            first_name="Jürgen", last_name="Müller", email="jm@example.com", phone="+48600100200"
        )
        spring, autumn = next_change(3), next_change(10)
        starts = {
            # 01:30 CET, before the clocks go forward; 10:00 CEST, after.
            "spring_early": datetime.combine(spring, time(1, 30), tzinfo=WARSAW),
            "spring_late": datetime.combine(spring, time(10), tzinfo=WARSAW),
            # 02:30 happens twice: first in CEST (00:30 UTC), then in CET (01:30 UTC).
            "autumn_first": datetime.combine(autumn, time(2, 30), tzinfo=WARSAW),
            "autumn_second": datetime.combine(autumn, time(2, 30, fold=1), tzinfo=WARSAW),
        }
        ids = {
            key: _appointment(staff_id, service.id, client.id, start, minutes=30)
            for key, start in starts.items()
        }
        cancelled_at = datetime.combine(spring + timedelta(days=1), time(12), tzinfo=WARSAW)
        ids["cancelled"] = _appointment(staff_id, service.id, client.id, cancelled_at)
        db.session.get(Appointment, ids["cancelled"]).status = AppointmentStatus.CANCELLED.value
        other = make_user("other@example.com", "sales", "Olga Inna")
        service.staff.append(other)
        db.session.commit()
        ids["others"] = _appointment(other.id, service.id, client.id, starts["spring_late"])
        return {
            "staff_id": staff_id,
            "client_id": client.id,
            "service_id": service.id,
            "ids": ids,
            "starts": {k: v.astimezone(UTC) for k, v in starts.items()},
        }


def _set_detail(app, detail: FeedDetail) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        organisation_for_update().calendar_feed_detail = detail.value
        db.session.commit()


def _new_token(app, email: str = "admin@example.com") -> str:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        user = db.session.scalar(select(User).where(User.email == email))
        token = feeds.create_feed(user, by=user)
        db.session.commit()
        return token


def _parse_both(body: bytes):  # type: ignore[no-untyped-def]
    text = body.decode("utf-8")
    return icalendar.Calendar.from_ical(body), vobject.readOne(text)


def _by_uid_icalendar(calendar) -> dict[str, icalendar.Event]:  # type: ignore[no-untyped-def]
    return {str(e["uid"]): e for e in calendar.walk("VEVENT")}


def _by_uid_vobject(calendar) -> dict:  # type: ignore[no-untyped-def]
    return {e.uid.value: e for e in calendar.vevent_list}


def _utc(value: datetime) -> datetime:
    # Compared in UTC: Python calls an ambiguous local time unequal to every instant
    # of another zone (PEP 495), even the one it means.
    return value.astimezone(UTC)


def _uid(appointment_id: int) -> str:
    return f"appointment-{appointment_id}@127.0.0.1"


# --- the feed over HTTP --------------------------------------------------------------------


def test_feed_times_and_zones_agree_in_both_parsers(app, client, data):  # type: ignore[no-untyped-def]
    token = _new_token(app)
    response = client.get(f"/calendar/feed/{token}.ics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert "no-store" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers  # nothing of a session is needed or made
    body = response.data
    assert b"BEGIN:VTIMEZONE" in body and b"TZID:Europe/Warsaw" in body
    parsed, other = _parse_both(body)
    events, vevents = _by_uid_icalendar(parsed), _by_uid_vobject(other)
    ids, starts = data["ids"], data["starts"]
    for key, start in starts.items():
        uid = _uid(ids[key])
        event, vevent = events[uid], vevents[uid]
        assert _utc(event.decoded("dtstart")) == start, key
        assert _utc(event.decoded("dtend")) == start + timedelta(minutes=30), key
        assert _utc(vevent.dtstart.value) == start, key
        assert _utc(vevent.dtend.value) == start + timedelta(minutes=30), key
    # Local wall-clock times with the zone, except the repeated hour (RFC 5545 would
    # read a local 02:30 as the first one), which is written in UTC.
    for key in ("spring_early", "spring_late", "autumn_first"):
        assert events[_uid(ids[key])]["dtstart"].params["TZID"] == "Europe/Warsaw"
    walls = {"spring_early": b"T013000", "spring_late": b"T100000", "autumn_first": b"T023000"}
    for key, wall in walls.items():
        assert events[_uid(ids[key])]["dtstart"].to_ical().endswith(wall), key
    second = events[_uid(ids["autumn_second"])]["dtstart"]
    assert "TZID" not in second.params and second.to_ical().endswith(b"Z")
    # The other staff member's appointment and the cancelled one are not in this feed.
    assert _uid(ids["others"]) not in events and _uid(ids["cancelled"]) not in events
    assert {str(e["status"]) for e in events.values()} == {"CONFIRMED"}
    assert len(events) == len(vevents) == 4


def test_detail_booked_shows_no_client_data(app, client, data):  # type: ignore[no-untyped-def]
    _set_detail(app, FeedDetail.BOOKED)
    body = client.get(f"/calendar/feed/{_new_token(app)}.ics").data
    text = body.decode("utf-8")
    for private in (*PRIVATE, "Jürgen"):
        assert private not in text
    parsed, other = _parse_both(body)
    summaries = {str(e["summary"]) for e in parsed.walk("VEVENT")}
    assert summaries == {"Booked: Strzyżenie"}
    assert {e.summary.value for e in other.vevent_list} == summaries
    assert {str(e["location"]) for e in parsed.walk("VEVENT")} == {"ul. Piotrkowska 1, Łódź"}


def test_detail_first_name_and_nothing_more(app, client, data):  # type: ignore[no-untyped-def]
    _set_detail(app, FeedDetail.FIRST_NAME)
    body = client.get(f"/calendar/feed/{_new_token(app)}.ics").data
    text = body.decode("utf-8")
    for private in PRIVATE:
        assert private not in text
    parsed, other = _parse_both(body)
    assert {str(e["summary"]) for e in parsed.walk("VEVENT")} == {"Jürgen: Strzyżenie"}
    assert {e.summary.value for e in other.vevent_list} == {"Jürgen: Strzyżenie"}
    for event in parsed.walk("VEVENT"):
        assert "DESCRIPTION" not in event and "ATTENDEE" not in event


def test_first_name_hidden_for_a_restricted_client(app, client, data):  # type: ignore[no-untyped-def]
    from crm.clients.models import Client

    _set_detail(app, FeedDetail.FIRST_NAME)
    with app.app_context():
        db.session.get(Client, data["client_id"]).restricted_at = utcnow()
        db.session.commit()
    body = client.get(f"/calendar/feed/{_new_token(app)}.ics").data
    assert "Jürgen" not in body.decode("utf-8")
    parsed, _ = _parse_both(body)
    assert {str(e["summary"]) for e in parsed.walk("VEVENT")} == {"Booked: Strzyżenie"}


def test_unknown_malformed_and_revoked_tokens_are_404(app, client, data):  # type: ignore[no-untyped-def]
    token = _new_token(app)
    assert client.get(f"/calendar/feed/{token}.ics").status_code == 200
    assert client.get("/calendar/feed/" + "A" * 43 + ".ics").status_code == 404
    assert client.get("/calendar/feed/x.ics").status_code == 404
    assert client.get("/calendar/feed/" + "ä" * 43 + ".ics").status_code == 404
    with app.test_request_context():
        feed = feeds.feed_for_token(token)
        assert feed is not None
        feeds.revoke_feed(feed, by=None)
        db.session.commit()
    revoked = client.get(f"/calendar/feed/{token}.ics")
    assert revoked.status_code == 404
    assert b"revoked" not in revoked.data.lower()


def test_a_deactivated_user_s_feed_is_404(app, client, data):  # type: ignore[no-untyped-def]
    token = _new_token(app)
    with app.app_context():
        db.session.get(User, data["staff_id"]).active = False
        db.session.commit()
    assert client.get(f"/calendar/feed/{token}.ics").status_code == 404


def test_new_link_revokes_the_old_and_only_the_hash_is_stored(app, client, data):  # type: ignore[no-untyped-def]
    first = _new_token(app)
    second = _new_token(app)
    assert first != second
    assert client.get(f"/calendar/feed/{first}.ics").status_code == 404
    assert client.get(f"/calendar/feed/{second}.ics").status_code == 200
    with app.app_context():
        rows = list(db.session.scalars(select(CalendarFeed).order_by(CalendarFeed.id)))
        assert [r.revoked_at is None for r in rows] == [False, True]
        assert rows[1].token_hash == hashlib.sha256(second.encode()).hexdigest()
        assert all(second not in r.token_hash and first not in r.token_hash for r in rows)
        actions = list(
            db.session.scalars(
                select(AuditEntry.action).where(AuditEntry.action.like("calendar_feed.%"))
            )
        )
        assert actions.count("calendar_feed.create") == 2


def test_last_used_is_written_at_most_once_an_hour(app, client, data):  # type: ignore[no-untyped-def]
    token = _new_token(app)
    client.get(f"/calendar/feed/{token}.ics")
    with app.app_context():
        feed = db.session.scalar(select(CalendarFeed).where(CalendarFeed.revoked_at.is_(None)))
        first = feed.last_used_at
        assert first is not None
    client.get(f"/calendar/feed/{token}.ics")
    with app.app_context():
        feed = db.session.scalar(select(CalendarFeed).where(CalendarFeed.revoked_at.is_(None)))
        assert feed.last_used_at == first  # polled again within the hour: no write
        assert feeds.mark_used(feed, now=utcnow() + timedelta(minutes=30)) is False
        assert feeds.mark_used(feed, now=utcnow() + timedelta(hours=2)) is True


def test_feed_is_reachable_from_outside_the_allow_list(app, client, data):  # type: ignore[no-untyped-def]
    from crm.security.models import AllowedNetwork

    token = _new_token(app)
    with app.app_context():
        db.session.add(AllowedNetwork(cidr="10.99.0.0/16", note="office"))
        db.session.commit()
    try:
        response = client.get(
            f"/calendar/feed/{token}.ics", environ_overrides={"REMOTE_ADDR": "203.0.113.9"}
        )
        assert response.status_code == 200
    finally:
        with app.app_context():
            for row in db.session.scalars(select(AllowedNetwork)):
                db.session.delete(row)
            db.session.commit()


# --- the client's .ics ---------------------------------------------------------------------


def test_appointment_ics_parses_with_both_and_names_no_client(app, data):  # type: ignore[no-untyped-def]
    with app.test_request_context():
        appointment = db.session.get(Appointment, data["ids"]["spring_late"])
        body = ics.appointment_ics(appointment)
    parsed, other = _parse_both(body)
    assert str(parsed["method"]) == "PUBLISH" and str(parsed["version"]) == "2.0"
    assert "PRODID" in parsed and other.method.value == "PUBLISH"
    (event,) = parsed.walk("VEVENT")
    start = data["starts"]["spring_late"]
    assert _utc(event.decoded("dtstart")) == start == _utc(other.vevent.dtstart.value)
    assert event["dtstart"].params["TZID"] == "Europe/Warsaw"
    assert _utc(other.vevent.dtend.value) == start + timedelta(minutes=30)
    assert str(event["summary"]) == "Strzyżenie – My business"
    assert other.vevent.summary.value == "Strzyżenie – My business"
    assert "Ada" in str(event["description"]) and "Łódź" in str(event["description"])
    assert str(event["location"]) == "ul. Piotrkowska 1, Łódź"
    assert str(event["uid"]) == _uid(data["ids"]["spring_late"])
    text = body.decode("utf-8")
    for private in (*PRIVATE, "Admin"):  # the staff member's surname neither
        assert private not in text


def test_reschedule_and_cancel_raise_the_sequence(app, data):  # type: ignore[no-untyped-def]
    from crm.appointments import services

    with app.test_request_context():
        appointment = db.session.get(Appointment, data["ids"]["spring_late"])
        appointment.created_at = utcnow() - timedelta(days=2)
        appointment.updated_at = appointment.created_at
        db.session.commit()
        first = ics.appointment_event(appointment, for_client=True)
        appointment.starts_at += timedelta(hours=1)
        appointment.ends_at += timedelta(hours=1)
        db.session.commit()
        moved = ics.appointment_event(appointment, for_client=True)
        services.cancel(appointment)
        db.session.commit()
        cancelled = ics.appointment_event(appointment, for_client=True)
    assert first["uid"] == moved["uid"] == cancelled["uid"]
    assert int(first["sequence"]) < int(moved["sequence"]) <= int(cancelled["sequence"])
    assert str(moved["status"]) == "CONFIRMED" and str(cancelled["status"]) == "CANCELLED"


# --- the panel -----------------------------------------------------------------------------


def test_panel_creates_shows_once_and_revokes(app, admin_client, data):  # type: ignore[no-untyped-def]
    page = admin_client.get("/appointments/hours")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Calendar subscription" in html and "Create link" in html
    created = admin_client.post("/appointments/calendar-feed/create")
    html = created.get_data(as_text=True)
    assert created.status_code == 200 and "no-store" in created.headers["Cache-Control"]
    assert 'id="calendar-feed-url"' in html and "/calendar/feed/" in html
    url = html.split('id="calendar-feed-url"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    path = url.split("127.0.0.1:5000", 1)[-1] if "://" in url else url
    assert admin_client.get(path).status_code == 200
    again = admin_client.get("/appointments/hours").get_data(as_text=True)
    assert path not in again and "New link (old one stops working)" in again  # shown once
    with app.app_context():
        feed = db.session.scalar(select(CalendarFeed).where(CalendarFeed.revoked_at.is_(None)))
        feed_id = feed.id
    revoked = admin_client.post(
        f"/appointments/calendar-feed/{feed_id}/revoke", data={"next": "/appointments/hours"}
    )
    assert revoked.status_code == 303 and revoked.headers["Location"].endswith(
        "/appointments/hours"
    )
    assert admin_client.get(path).status_code == 404


def test_panel_permissions(app, client, data):  # type: ignore[no-untyped-def]
    admin_token = _new_token(app)
    with app.app_context():
        admin_feed_id = db.session.scalar(
            select(CalendarFeed.id).where(CalendarFeed.revoked_at.is_(None))
        )
        make_user("viewer@example.com", "readonly", "Vera Viewer")
    # A user who may only see the calendar manages their own link...
    login(client, "viewer@example.com")
    assert client.get("/appointments/calendar-feed").status_code == 200
    # The calendar links a viewer (who has no hours page) to their subscription.
    assert 'href="/appointments/calendar-feed"' in client.get("/appointments/").get_data(
        as_text=True
    )
    assert client.post("/appointments/calendar-feed/create").status_code == 200
    with app.app_context():
        own = db.session.scalar(
            select(CalendarFeed)
            .join(User, User.id == CalendarFeed.user_id)
            .where(User.email == "viewer@example.com", CalendarFeed.revoked_at.is_(None))
        )
        own_id = own.id
    # ...but not anyone else's.
    assert client.post(f"/appointments/calendar-feed/{admin_feed_id}/revoke").status_code == 403
    assert client.get(f"/calendar/feed/{admin_token}.ics").status_code == 200
    assert client.post("/appointments/calendar-feed/999999/revoke").status_code == 404
    assert client.post(f"/appointments/calendar-feed/{own_id}/revoke").status_code == 303
    client.post("/logout")
    # A manager sees and revokes another user's link from their hours page, and
    # cannot make one for them (the secret is for its owner's eyes only).
    login(client, "admin@example.com")
    with app.app_context():
        viewer_id = db.session.scalar(select(User.id).where(User.email == "viewer@example.com"))
    _new_token(app, "viewer@example.com")
    page = client.get(f"/appointments/hours/{viewer_id}").get_data(as_text=True)
    assert "Revoke" in page and "Create link" not in page and "New link" not in page
    with app.app_context():
        viewer_feed = db.session.scalar(
            select(CalendarFeed.id).where(
                CalendarFeed.user_id == viewer_id, CalendarFeed.revoked_at.is_(None)
            )
        )
    assert client.post(f"/appointments/calendar-feed/{viewer_feed}/revoke").status_code == 303
    with app.app_context():
        assert feeds.live_feed(viewer_id) is None


def test_panel_needs_a_signed_in_user(client, data):  # type: ignore[no-untyped-def]
    assert client.get("/appointments/calendar-feed").status_code in (302, 401)
    assert client.post("/appointments/calendar-feed/create").status_code in (302, 401)
