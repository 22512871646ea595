"""The calendar, booking, reschedule, cancel and statuses, over HTTP."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from sqlalchemy import select

from crm.appointments.models import Appointment
from crm.extensions import db
from tests.appointments.factories import admin_id, every_day, local, make_service, next_week
from tests.conftest import login, make_client, make_user


@pytest.fixture
def setup(app, admin_client):  # type: ignore[no-untyped-def]
    with app.app_context():
        staff_id = admin_id()
        every_day(staff_id)
        service = make_service([staff_id], name="Strzyżenie")
        client = make_client(first_name="Jürgen", last_name="Müller")
        return {"staff_id": staff_id, "service_id": service.id, "client_id": client.id}


def _book(http, setup, start, client_id=None, **extra):  # type: ignore[no-untyped-def]
    return http.post(
        "/appointments/new",
        data={
            "staff": setup["staff_id"],
            "start": start.isoformat(),
            "service_id": setup["service_id"],
            "client_id": client_id or setup["client_id"],
            "notes": "Pierwsza wizyta – Łódź",
            **extra,
        },
    )


def _appointments(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(db.session.scalars(select(Appointment).order_by(Appointment.id)))


def test_day_view_shows_free_slots_and_links_to_booking(admin_client, setup):
    day = next_week()
    response = admin_client.get(f"/appointments/?date={day.isoformat()}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Strzyżenie" in html
    start = local(day, 9).astimezone(UTC).isoformat()
    assert "/appointments/new?staff=" in html
    assert "+ 09:00" in html and "+ 16:00" in html and "+ 16:15" not in html
    assert start.replace("+", "%2B") in html


def test_week_views_per_staff_and_for_the_team(admin_client, setup):
    day = next_week()
    staff = admin_client.get(f"/appointments/?view=week&date={day}&staff={setup['staff_id']}")
    assert staff.status_code == 200
    assert staff.get_data(as_text=True).count('<th scope="col"') == 8  # time + 7 days
    team = admin_client.get(f"/appointments/?view=week&date={day}")
    assert team.status_code == 200
    assert "cal-team-week" in team.get_data(as_text=True)
    assert "free times" in team.get_data(as_text=True)


def test_htmx_navigation_returns_the_partial(admin_client, setup):
    response = admin_client.get(
        f"/appointments/?date={next_week()}", headers={"HX-Request": "true"}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html and "cal-toolbar" in html
    assert "HX-Request" in response.headers["Vary"]
    assert 'hx-push-url="true"' in html


def test_bad_calendar_arguments_are_4xx(admin_client, setup):
    assert admin_client.get("/appointments/?date=2026-13-45").status_code == 400
    assert admin_client.get("/appointments/?date=9999-12-31").status_code == 400
    assert admin_client.get("/appointments/?date=0001-01-01&view=week").status_code == 400
    far = f"/appointments/new?staff={setup['staff_id']}&start=9999-12-31T23:00:00%2B00:00"
    assert admin_client.get(far).status_code == 400
    assert admin_client.get("/appointments/new?staff=1&start=tomorrow").status_code == 400
    assert admin_client.get("/appointments/?staff=99999").status_code == 404
    assert admin_client.get("/appointments/?service=99999").status_code == 404


def test_book_then_the_same_slot_is_just_taken(admin_client, setup, app):
    start = local(next_week(), 10)
    response = _book(admin_client, setup, start)
    assert response.status_code == 302
    [appointment] = _appointments(app)
    assert appointment.starts_at == start.astimezone(UTC)
    assert appointment.ends_at - appointment.starts_at == timedelta(hours=1)
    assert appointment.notes == "Pierwsza wizyta – Łódź"
    with app.app_context():
        other = make_client(first_name="Antonín", last_name="Dvořák").id
    again = _book(admin_client, setup, start, client_id=other)
    assert again.status_code == 409
    assert "just taken" in again.get_data(as_text=True)
    # Overlapping by half an hour is taken too.
    assert _book(admin_client, setup, start + timedelta(minutes=30), other).status_code == 409
    assert len(_appointments(app)) == 1
    # The calendar shows the appointment with the client's name.
    html = admin_client.get(f"/appointments/?date={next_week()}").get_data(as_text=True)
    assert "Jürgen Müller" in html or "Müller" in html


def test_booking_outside_working_hours_or_in_the_past_is_refused(admin_client, setup):
    assert _book(admin_client, setup, local(next_week(), 7)).status_code == 409
    assert (
        _book(admin_client, setup, local(next_week() - timedelta(days=14), 10)).status_code == 409
    )


def test_booking_form_validation(admin_client, setup):
    start = local(next_week(), 10)
    page = admin_client.get(
        f"/appointments/new?staff={setup['staff_id']}&start={start.isoformat().replace('+', '%2B')}"
        f"&client_id={setup['client_id']}"
    )
    assert page.status_code == 200 and "Müller" in page.get_data(as_text=True)
    missing = _book(admin_client, setup, start, client_id="abc")
    assert missing.status_code == 200
    assert "Choose the client this appointment is for." in missing.get_data(as_text=True)
    assert admin_client.post("/appointments/new", data={"staff": "x"}).status_code == 400


def test_reschedule_and_cancel(admin_client, setup, app):
    start = local(next_week(), 10)
    _book(admin_client, setup, start)
    [appointment] = _appointments(app)
    page = admin_client.get(f"/appointments/{appointment.id}/reschedule?date={next_week()}")
    assert page.status_code == 200
    # Its own time is offered (moving within its own hour is allowed).
    assert "10:30" in page.get_data(as_text=True)
    moved = admin_client.post(
        f"/appointments/{appointment.id}/reschedule",
        data={"staff": setup["staff_id"], "start": (start + timedelta(minutes=30)).isoformat()},
    )
    assert moved.status_code == 302
    [appointment] = _appointments(app)
    assert appointment.starts_at == (start + timedelta(minutes=30)).astimezone(UTC)
    confirm = admin_client.get(f"/appointments/{appointment.id}/cancel")
    assert confirm.status_code == 200 and "Yes, cancel it" in confirm.get_data(as_text=True)
    assert admin_client.post(f"/appointments/{appointment.id}/cancel").status_code == 302
    [appointment] = _appointments(app)
    assert appointment.status == "cancelled" and appointment.cancelled_at is not None
    # The time is free again.
    assert _book(admin_client, setup, start).status_code == 302


def test_statuses(admin_client, setup, app):
    _book(admin_client, setup, local(next_week(), 10))
    [appointment] = _appointments(app)
    url = f"/appointments/{appointment.id}/status"
    assert admin_client.post(url, data={"status": "confirmed"}).status_code == 302
    assert _appointments(app)[0].status == "confirmed"
    # Done and no-show only once it began.
    admin_client.post(url, data={"status": "done"})
    assert _appointments(app)[0].status == "confirmed"
    assert admin_client.post(url, data={"status": "bogus"}).status_code == 400
    page = admin_client.get(f"/appointments/{appointment.id}").get_data(as_text=True)
    assert "Confirmed" in page
    assert (
        admin_client.post(
            f"/appointments/{appointment.id}", data={"notes": "Kawa bez cukru"}
        ).status_code
        == 302
    )
    assert _appointments(app)[0].notes == "Kawa bez cukru"


def test_seats_of_a_workshop(admin_client, setup, app):
    with app.app_context():
        workshop = make_service(
            [setup["staff_id"]], name="Warsztaty", capacity=2, duration_minutes=120
        ).id
        clients = [make_client(last_name=f"Nowak{n}").id for n in range(3)]
    start = local(next_week(), 12)
    data = dict(setup, service_id=workshop)
    assert _book(admin_client, data, start, clients[0]).status_code == 302
    assert _book(admin_client, data, start, clients[0]).status_code == 200  # same client twice
    assert _book(admin_client, data, start, clients[1]).status_code == 302
    assert _book(admin_client, data, start, clients[2]).status_code == 409
    assert len(_appointments(app)) == 2


def test_permissions(app, setup):
    client = app.test_client()  # not the admin's
    with app.app_context():
        make_user("ro@example.com", role="readonly", name="Read Only")
        make_user("sales@example.com", role="sales", name="Sales")
    login(client, "ro@example.com")
    assert client.get("/appointments/").status_code == 200
    start = local(next_week(), 10)
    assert _book(client, setup, start).status_code == 403
    assert client.get("/appointments/hours").status_code == 403
    assert client.get("/appointments/services/").status_code == 403
    client.post("/logout")
    login(client, "sales@example.com")
    assert client.get("/appointments/hours").status_code == 200
    assert client.get(f"/appointments/hours/{setup['staff_id']}").status_code == 403
    assert client.get("/appointments/services/").status_code == 403
    # The admin's client is outside a sales user's scope: the calendar says "Booked".
    assert _book(client, setup, start).status_code == 200  # that client is not theirs


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Last Sunday of March 2027: 02:00-03:00 does not exist.
        ("2027-03-28", ["+ 01:00", "+ 01:45", "+ 03:00"]),
        # Last Sunday of October 2027: 02:00-03:00 happens twice.
        ("2027-10-31", ["+ 01:00", "+ 02:45", "+ 03:00"]),
    ],
)
def test_calendar_on_daylight_saving_days(admin_client, app, setup, day, expected):
    from datetime import time

    with app.app_context():
        every_day(setup["staff_id"], time(1), time(4))
    response = admin_client.get(f"/appointments/?date={day}&staff={setup['staff_id']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for label in expected:
        assert label in html
    week = admin_client.get(f"/appointments/?date={day}&view=week")
    assert week.status_code == 200
