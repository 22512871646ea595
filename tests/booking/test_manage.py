"""The client's manage link: signed, view, cancel and move up to the cutoff, stop SMS."""

from __future__ import annotations

from datetime import UTC

import pytest

import crm.queue
from crm.appointments.models import Appointment
from crm.booking.links import load_manage_token, manage_token, manage_url
from crm.clients.models import Client
from crm.extensions import db
from crm.sqltypes import utcnow
from tests.appointments.factories import admin_id, every_day, local, make_service, next_week
from tests.booking import appointments, details_url, manage_path, person


@pytest.fixture(autouse=True)
def _empty_queue(app):  # type: ignore[no-untyped-def]
    crm.queue.broker.flush_all()
    yield
    crm.queue.broker.flush_all()


@pytest.fixture
def booked(app, admin, client):  # type: ignore[no-untyped-def]
    """One online booking next week at 10:00 (Warsaw); its manage path."""
    with app.app_context():
        staff_id = admin_id()
        every_day(staff_id)
        service_id = make_service(
            [staff_id], name="Masáž Łódź", required_data=["name", "email", "phone"]
        ).id
    response = client.post(
        details_url(service_id, local(next_week(), 10)),
        data=person(first_name="Antonín", last_name="Dvořák", phone="+48601234567"),
    )
    path = manage_path(response).split("?")[0]
    [appointment] = appointments(app)
    return {"path": path, "id": appointment.id, "service_id": service_id, "staff_id": staff_id}


def _appointment(app, appointment_id: int) -> Appointment:  # type: ignore[no-untyped-def]
    with app.app_context():
        found = db.session.get(Appointment, appointment_id)
        assert found is not None
        return found


def _snapshot(app, appointment_id: int) -> tuple:  # type: ignore[no-untyped-def]
    found = _appointment(app, appointment_id)
    with app.app_context():
        client = db.session.get(Client, found.client_id)
        return (
            found.status,
            found.starts_at,
            found.staff_id,
            found.public_token,
            client.sms_opt_out_at,
        )


def test_manage_page_shows_the_booking_without_client_data(client, app, booked):
    response = client.get(booked["path"])
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Masáž Łódź" in html and "ul. Piotrkowska 1, Łódź" in html
    assert "Booked" in html and "10:00" in html
    assert "Dvořák" not in html and "zofia@example.com" not in html
    assert "/reschedule" in html and "/cancel" in html and "Stop SMS reminders" in html


def test_link_round_trips_and_tampered_links_are_400(client, app, booked):
    with app.test_request_context():
        appointment = db.session.get(Appointment, booked["id"])
        token = manage_token(appointment)
        assert load_manage_token(token).id == booked["id"]
        assert manage_url(appointment).endswith(f"/book/manage/{token}")
        assert load_manage_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
        assert load_manage_token("") is None and load_manage_token("x" * 500) is None
    tampered = booked["path"][:-3] + ("abc" if not booked["path"].endswith("abc") else "xyz")
    response = client.get(tampered)
    assert response.status_code == 400
    assert 'id="booking-error"' in response.get_data(as_text=True)
    assert client.post(tampered + "/cancel").status_code == 400


def test_a_new_public_token_voids_old_links(client, app, booked):
    with app.app_context():
        appointment = db.session.get(Appointment, booked["id"])
        appointment.public_token = "another-token-entirely"
        db.session.commit()
    assert client.get(booked["path"]).status_code == 400


def test_missing_public_token_is_made_on_first_link(app, booked):
    with app.test_request_context():
        appointment = db.session.get(Appointment, booked["id"])
        appointment.public_token = None
        db.session.flush()
        url = manage_url(appointment)
        assert appointment.public_token
        assert load_manage_token(url.rsplit("/", 1)[1]).id == booked["id"]


def test_get_changes_nothing(client, app, booked):
    before = _snapshot(app, booked["id"])
    start = local(next_week(), 14).astimezone(UTC).isoformat().replace("+", "%2B")
    for path in (
        booked["path"],
        booked["path"] + "/cancel",
        booked["path"] + "/reschedule",
        booked["path"] + f"/move?start={start}",
    ):
        assert client.get(path).status_code == 200, path
    assert client.get(booked["path"] + "/sms-stop").status_code == 405
    assert _snapshot(app, booked["id"]) == before


def test_cancel_before_the_cutoff(client, app, booked):
    page = client.get(booked["path"] + "/cancel")
    assert "Yes, cancel it" in page.get_data(as_text=True)
    response = client.post(booked["path"] + "/cancel", follow_redirects=True)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Your booking is cancelled." in html and "Book a new time" in html
    found = _appointment(app, booked["id"])
    assert found.status == "cancelled" and found.cancelled_at is not None
    # Cancelled stays cancelled; the page says so and offers nothing to change.
    again = client.post(booked["path"] + "/cancel")
    assert again.status_code == 409
    assert "/reschedule" not in client.get(booked["path"]).get_data(as_text=True)


def test_after_the_cutoff_changes_are_refused(client, app, booked):
    from crm.org.services import organisation_for_update

    with app.app_context():
        appointment = db.session.get(Appointment, booked["id"])
        appointment.service.cancel_cutoff_hours = 200  # more than the 7-8 days left
        org = organisation_for_update()
        org.privacy_contact = "biuro@łódź.example"
        db.session.commit()
    before = _snapshot(app, booked["id"])
    html = client.get(booked["path"]).get_data(as_text=True)
    assert 'id="booking-cutoff"' in html and "biuro@łódź.example" in html
    assert "/cancel" not in html
    response = client.post(booked["path"] + "/cancel")
    assert response.status_code == 409
    start = local(next_week(), 14).astimezone(UTC).isoformat()
    assert client.post(booked["path"] + "/move", data={"start": start}).status_code == 409
    assert _snapshot(app, booked["id"]) == before


def test_reschedule_moves_the_appointment(client, app, booked):
    week = next_week().isoformat()
    page = client.get(booked["path"] + f"/reschedule?week={week}")
    html = page.get_data(as_text=True)
    new_start = local(next_week(), 14)
    assert page.status_code == 200
    assert new_start.astimezone(UTC).isoformat().replace("+", "%2B") in html
    confirm = client.get(
        booked["path"] + f"/move?start={new_start.astimezone(UTC).isoformat().replace('+', '%2B')}"
    )
    assert "Yes, move it" in confirm.get_data(as_text=True)
    response = client.post(
        booked["path"] + "/move", data={"start": new_start.astimezone(UTC).isoformat()}
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(booked["path"])
    response = client.get(booked["path"])
    assert "Your booking is moved." in response.get_data(as_text=True)
    found = _appointment(app, booked["id"])
    assert found.starts_at == new_start.astimezone(UTC)
    assert found.ends_at == new_start.astimezone(UTC).replace(hour=found.starts_at.hour + 1)
    # The same link still works after the move.
    assert client.get(booked["path"]).status_code == 200


def test_reschedule_to_a_taken_time_is_409(client, app, booked):
    from crm.appointments import services

    taken = local(next_week(), 14)
    with app.app_context():
        other = Client(first_name="Jan", last_name="Kowalski", custom={})
        db.session.add(other)
        db.session.flush()
        services.book(
            service=services.get_service(booked["service_id"]),
            staff_id=booked["staff_id"],
            client_id=other.id,
            starts_at=taken.astimezone(UTC),
        )
        db.session.commit()
    response = client.post(
        booked["path"] + "/move", data={"start": taken.astimezone(UTC).isoformat()}
    )
    assert response.status_code == 409
    assert 'id="slot-taken"' in response.get_data(as_text=True)
    assert _appointment(app, booked["id"]).starts_at == local(next_week(), 10).astimezone(UTC)


def test_stop_sms_reminders(client, app, booked):
    response = client.post(booked["path"] + "/sms-stop", follow_redirects=True)
    assert response.status_code == 200
    assert "no more SMS reminders" in response.get_data(as_text=True)
    found = _appointment(app, booked["id"])
    with app.app_context():
        assert db.session.get(Client, found.client_id).sms_opt_out_at is not None
    assert "Stop SMS reminders" not in client.get(booked["path"]).get_data(as_text=True)


def test_restricted_client_cannot_change_anything_online(client, app, booked):
    found = _appointment(app, booked["id"])
    with app.app_context():
        db.session.get(Client, found.client_id).restricted_at = utcnow()
        db.session.commit()
    before = _snapshot(app, booked["id"])
    html = client.get(booked["path"]).get_data(as_text=True)
    assert 'id="booking-restricted"' in html and "/cancel" not in html
    assert client.post(booked["path"] + "/cancel").status_code == 409
    assert client.post(booked["path"] + "/sms-stop").status_code == 409
    start = local(next_week(), 14).astimezone(UTC).isoformat()
    assert client.post(booked["path"] + "/move", data={"start": start}).status_code == 409
    assert _snapshot(app, booked["id"]) == before


def test_manage_pages_are_public_and_in_the_url_map(app):
    from crm.web.access import declared_access

    endpoints = [r.endpoint for r in app.url_map.iter_rules() if r.endpoint.startswith("booking.")]
    for endpoint in endpoints:
        if endpoint == "booking.static":
            continue
        assert declared_access(app.view_functions[endpoint]) == "public", endpoint
    assert {"booking.manage", "booking.cancel", "booking.move", "booking.sms_stop"} <= set(
        endpoints
    )


def test_public_pages_are_reachable_from_outside_the_allow_list(client, app, booked):
    from crm.security import services as network

    with app.app_context():
        network.add_network("10.0.0.0/8")
        db.session.commit()
        network.forget_rules()
    outside = {"REMOTE_ADDR": "203.0.113.5"}
    try:
        assert client.get("/book", environ_base=outside).status_code == 200
        assert client.get(booked["path"], environ_base=outside).status_code == 200
        assert client.post(booked["path"] + "/cancel", environ_base=outside).status_code == 303
    finally:
        with app.app_context():
            network.forget_rules()
