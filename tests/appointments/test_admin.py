"""Services and working hours: the admin pages, form validation, the card section."""

from __future__ import annotations

from datetime import UTC, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from crm.appointments import services
from crm.appointments.forms import TimeTextError, parse_intervals
from crm.appointments.models import AvailabilityException, Block, Service, WorkingHours
from crm.extensions import db
from tests.appointments.factories import admin_id, every_day, local, make_service, next_week
from tests.conftest import make_client

GOOD_SERVICE = {
    "name": "Masaż relaksacyjny",
    "description": "Dla zmęczonych pleców",
    "duration_minutes": "50",
    "buffer_before_minutes": "5",
    "buffer_after_minutes": "10",
    "price": "1 250,50",
    "capacity": "1",
    "location": "Łódź, ul. Piotrkowska 12",
    "online_url": "",
    "min_notice_hours": "12",
    "max_days_ahead": "30",
    "required_data": ["name", "phone"],
}


def test_create_edit_archive_a_service(admin_client, app):
    with app.app_context():
        staff = admin_id()
    page = admin_client.get("/appointments/services/new")
    assert page.status_code == 200 and "data minimisation" in page.get_data(as_text=True)
    response = admin_client.post(
        "/appointments/services/new", data={**GOOD_SERVICE, "staff_ids": [str(staff)]}
    )
    assert response.status_code == 302
    with app.app_context():
        service = db.session.scalar(select(Service))
        assert service.name == "Masaż relaksacyjny"
        assert service.price == Decimal("1250.50") and service.currency == "PLN"
        assert service.required_data == ["name", "phone"]
        assert [u.id for u in service.staff] == [staff]
        service_id = service.id
    listing = admin_client.get("/appointments/services/").get_data(as_text=True)
    assert "Masaż relaksacyjny" in listing and "1,250.50" in listing
    edited = admin_client.post(
        f"/appointments/services/{service_id}/edit",
        data={**GOOD_SERVICE, "price": "", "capacity": "8", "staff_ids": [str(staff)]},
    )
    assert edited.status_code == 302
    with app.app_context():
        service = db.session.get(Service, service_id)
        assert service.capacity == 8 and service.price is None and service.currency is None
    assert admin_client.post(f"/appointments/services/{service_id}/archive").status_code == 302
    with app.app_context():
        assert db.session.get(Service, service_id).archived
        assert services.active_services() == []
    admin_client.post(f"/appointments/services/{service_id}/archive", data={"archive": "0"})
    with app.app_context():
        assert not db.session.get(Service, service_id).archived


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "Name the service."),
        ({"duration_minutes": "0"}, "Between 5 minutes and 12 hours."),
        ({"duration_minutes": "abc"}, "Not a valid integer value."),
        ({"price": "12,345"}, "Use at most two decimal places"),
        ({"price": "-5"}, "cannot be negative"),
        ({"capacity": "0"}, "Between 1 and 500 seats."),
        ({"buffer_after_minutes": "999"}, "Between 0 and 240 minutes."),
        ({"online_url": "not a link"}, "Enter a full link"),
        ({"required_data": ["email"]}, "at least the client&#39;s name"),
        ({"staff_ids": []}, "Choose who offers this service."),
    ],
)
def test_service_form_validation(admin_client, app, changes, message):
    with app.app_context():
        staff = admin_id()
    data = {**GOOD_SERVICE, "staff_ids": [str(staff)], **changes}
    response = admin_client.post("/appointments/services/new", data=data)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert message in html
    assert 'class="field-error"' in html
    with app.app_context():
        assert db.session.scalar(select(Service)) is None


def test_duplicate_service_name(admin_client, app):
    with app.app_context():
        staff = admin_id()
        make_service([staff], name="Masaż relaksacyjny")
    response = admin_client.post(
        "/appointments/services/new", data={**GOOD_SERVICE, "staff_ids": [str(staff)]}
    )
    assert "exists already" in response.get_data(as_text=True)


def test_parse_intervals():
    assert parse_intervals("9-12, 13:00–17:30") == [(time(9), time(12)), (time(13), time(17, 30))]
    assert parse_intervals("") == []
    for bad in ("9", "17-9", "9:00-12:00, 11:00-13:00", "25:00-26:00", "9:75-10"):
        with pytest.raises(TimeTextError):
            parse_intervals(bad)


def test_weekly_hours_page(admin_client, app):
    with app.app_context():
        staff = admin_id()
    assert admin_client.get("/appointments/hours").status_code == 200
    bad = admin_client.post(f"/appointments/hours/{staff}/weekly", data={"day_0": "17-9"})
    assert bad.status_code == 422
    assert "the end must come after the start" in bad.get_data(as_text=True)
    good = admin_client.post(
        f"/appointments/hours/{staff}/weekly",
        data={"day_0": "9:00-12:00, 13:00-17:00", "day_4": "8-14"},
    )
    assert good.status_code == 302
    with app.app_context():
        rows = db.session.scalars(select(WorkingHours).order_by(WorkingHours.id)).all()
        assert [(r.weekday, r.start_time, r.end_time) for r in rows] == [
            (0, time(9), time(12)),
            (0, time(13), time(17)),
            (4, time(8), time(14)),
        ]
    page = admin_client.get("/appointments/hours").get_data(as_text=True)
    assert "09:00-12:00, 13:00-17:00" in page


def test_exceptions_and_blocks(admin_client, app):
    with app.app_context():
        staff = admin_id()
        every_day(staff)
        service_id = make_service([staff]).id
    day = next_week()
    bad = admin_client.post(
        f"/appointments/hours/{staff}/exceptions",
        data={"kind": "hours", "start_date": day.isoformat(), "hours": ""},
    )
    assert bad.status_code == 422 and "Give the hours" in bad.get_data(as_text=True)
    backwards = admin_client.post(
        f"/appointments/hours/{staff}/exceptions",
        data={
            "kind": "off",
            "start_date": day.isoformat(),
            "end_date": (day - timedelta(days=1)).isoformat(),
        },
    )
    assert "comes before the first" in backwards.get_data(as_text=True)
    assert (
        admin_client.post(
            f"/appointments/hours/{staff}/exceptions",
            data={
                "kind": "hours",
                "start_date": day.isoformat(),
                "hours": "10-12",
                "note": "Wigilia",
            },
        ).status_code
        == 302
    )
    assert (
        admin_client.post(
            f"/appointments/hours/{staff}/blocks",
            data={
                "kind": "once",
                "day": day.isoformat(),
                "hours": "10:00-11:00",
                "note": "Dentysta",
            },
        ).status_code
        == 302
    )
    weekly = admin_client.post(
        f"/appointments/hours/{staff}/blocks",
        data={
            "kind": "weekly",
            "weekday": "0",
            "hours": "9-10",
            "note": "Zebranie",
            "scope": "team",
        },
    )
    assert weekly.status_code == 302
    missing_day = admin_client.post(
        f"/appointments/hours/{staff}/blocks", data={"kind": "once", "hours": "9-10"}
    )
    assert "Pick the date" in missing_day.get_data(as_text=True)
    with app.app_context():
        service = db.session.get(Service, service_id)
        found = services.slots_for(service, day, day, honour_window=False)
        assert [s.starts_at for s in found] == [local(day, 11).astimezone(UTC)]
        block = db.session.scalar(select(Block).where(Block.note == "Zebranie"))
        assert block.user_id is None and block.weekday == 0
        exception = db.session.scalar(select(AvailabilityException))
        assert exception.note == "Wigilia"
        ids = (exception.id, block.id)
    page = admin_client.get("/appointments/hours").get_data(as_text=True)
    assert "Wigilia" in page and "Zebranie" in page and "Dentysta" in page
    calendar = admin_client.get(f"/appointments/?date={day}").get_data(as_text=True)
    assert 'class="cal-block"' in calendar and "Dentysta" in calendar
    assert (
        admin_client.post(f"/appointments/hours/{staff}/exceptions/{ids[0]}/delete").status_code
        == 302
    )
    assert (
        admin_client.post(f"/appointments/hours/{staff}/blocks/{ids[1]}/delete").status_code == 302
    )
    with app.app_context():
        assert db.session.scalar(select(AvailabilityException)) is None


def test_card_section_lists_upcoming_and_recent(admin_client, app):
    with app.app_context():
        staff = admin_id()
        every_day(staff, time(0, 0), time(23, 45))
        service = make_service([staff], name="Przegląd")
        client = make_client(first_name="Łucja", last_name="Dvořáková")
        start = local(next_week(), 10).astimezone(UTC)
        db.session.commit()
        services.book(service=service, staff_id=staff, client_id=client.id, starts_at=start)
        db.session.commit()
        client_id = client.id
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert 'id="appointments"' in card
    assert f"/appointments/client/{client_id}" in card
    section = admin_client.get(f"/appointments/client/{client_id}", headers={"HX-Request": "true"})
    html = section.get_data(as_text=True)
    assert section.status_code == 200 and "Przegląd" in html and "Upcoming" in html
    assert f"/appointments/?client_id={client_id}" in html  # Book an appointment
    prefilled = admin_client.get(f"/appointments/?client_id={client_id}&date={next_week()}")
    assert "Booking for Łucja Dvořáková" in prefilled.get_data(as_text=True)
    assert f"client_id={client_id}" in prefilled.get_data(as_text=True)
    assert admin_client.get("/appointments/client/999999").status_code == 404


def test_cli_lists_services_and_free_times(app):
    with app.app_context():
        staff = admin_id_or_new()
        every_day(staff)
        service_id = make_service([staff], name="Pedicure Łódź").id
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["appointments", "services"])
    assert listed.exit_code == 0 and "Pedicure Łódź" in listed.output
    day = next_week().isoformat()
    found = runner.invoke(
        args=["appointments", "slots", str(service_id), "--from", day, "--days", "1"]
    )
    assert found.exit_code == 0, found.output
    assert f"{day} 09:00" in found.output and f"{day} 16:00" in found.output
    missing = runner.invoke(args=["appointments", "slots", "99999"])
    assert missing.exit_code != 0 and "no service" in missing.output


def admin_id_or_new() -> int:
    from tests.conftest import make_user

    return make_user().id
