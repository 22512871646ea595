"""The public booking page: services, slots, the details form, consents, matching the
client, the honeypot, the rate limit, races and the confirmation email."""

from __future__ import annotations

import email
from datetime import UTC, timedelta
from decimal import Decimal
from email import policy

import icalendar
import pytest
from sqlalchemy import func, select

import crm.queue
from crm.appointments import services as appointment_services
from crm.appointments.models import AppointmentSource
from crm.audit.models import AuditEntry
from crm.campaigns.models import SentMessage
from crm.clients.models import Client
from crm.consents.models import ConsentEvent, ConsentState, LegalBasis, Method
from crm.consents.services import PurposeSpec, create_purpose
from crm.extensions import db, limiter
from tests.appointments.factories import admin_id, every_day, local, make_service, next_week
from tests.booking import (
    UA,
    appointments,
    details_url,
    manage_path,
    pending_booking_emails,
    person,
    run_booking_emails,
)
from tests.conftest import make_client, make_test_app, make_user


@pytest.fixture(autouse=True)
def _empty_queue(app):  # type: ignore[no-untyped-def]
    crm.queue.broker.flush_all()
    yield
    crm.queue.broker.flush_all()


@pytest.fixture
def setup(app, admin):  # type: ignore[no-untyped-def]
    with app.app_context():
        staff_id = admin_id()
        every_day(staff_id)
        service = make_service(
            [staff_id],
            name="Konsultacja",
            price=Decimal("150.00"),
            description="Rozmowa w Łodzi",
        )
        return {"staff_id": staff_id, "service_id": service.id}


def _newsletter(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        purpose = create_purpose(
            PurposeSpec(
                name="Newsletter",
                key="newsletter",
                legal_basis=LegalBasis.CONSENT,
                retention_months=24,
                channels=["email"],
            ),
            {"en": "Monthly news and offers by email.", "pl": "Co miesiąc nowości e-mailem."},
            by=None,
        )
        db.session.commit()
        return purpose.id


def _start(hour: int = 10):  # type: ignore[no-untyped-def]
    return local(next_week(), hour)


def _post(client, setup, start=None, staff=None, environ_base=None, **data):  # type: ignore[no-untyped-def]
    return client.post(
        details_url(setup["service_id"], start or _start(), staff),
        data=person(**data),
        headers={"User-Agent": UA},
        environ_base=environ_base or {},
    )


# --- the pages -------------------------------------------------------------------------


def test_services_page_lists_online_services_with_localised_price(client, app, setup):
    with app.app_context():
        hidden = make_service([setup["staff_id"]], name="Tylko telefonicznie")
        hidden.online_booking = False
        db.session.commit()
    response = client.get("/book", headers={"Accept-Language": "pl"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Konsultacja" in html and "Rozmowa w Łodzi" in html
    assert "150,00\xa0zł" in html
    assert "Tylko telefonicznie" not in html
    assert f'href="/book/{setup["service_id"]}"' in html


def test_services_page_empty_state(client, app):
    response = client.get("/book")
    assert response.status_code == 200
    assert 'id="no-services"' in response.get_data(as_text=True)


def test_slot_page_shows_a_week_of_local_times_and_merges_anyone(client, app, setup):
    with app.app_context():
        other = make_user("jan@example.com", role="admin", name="Jan Nowak").id
        every_day(other)
        service = appointment_services.get_service(setup["service_id"])
        service.staff = [*service.staff, db.session.get(type(service.staff[0]), other)]
        db.session.commit()
    day = next_week()
    response = client.get(f"/book/{setup['service_id']}?week={day.isoformat()}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    # Local wall-clock times (Europe/Warsaw), one link per start time for "anyone".
    start = local(day, 9).astimezone(UTC).isoformat().replace("+", "%2B")
    assert html.count(f"start={start}") == 1
    assert ">09:00<" in html and ">16:00<" in html and ">16:15<" not in html
    assert "Anyone" in html and "Ada" in html and "Jan" in html
    assert "admin@example.com" not in html  # staff emails never show
    assert 'rel="next"' in html and 'rel="prev"' in html
    # One staff member's week: their id travels to the details link.
    mine = client.get(f"/book/{setup['service_id']}?week={day}&staff={other}")
    assert f"staff={other}" in mine.get_data(as_text=True)
    assert client.get(f"/book/{setup['service_id']}?staff=999999").status_code == 404


def test_slot_page_empty_week(client, app, admin):
    with app.app_context():
        service_id = make_service([admin_id()], name="Nikt nie pracuje").id
    response = client.get(f"/book/{service_id}")
    assert response.status_code == 200
    assert 'id="no-times"' in response.get_data(as_text=True)


def test_unknown_or_hidden_service_is_404(client, app, setup):
    assert client.get("/book/999999").status_code == 404
    with app.app_context():
        appointment_services.set_archived(
            appointment_services.get_service(setup["service_id"]), True
        )
        db.session.commit()
    assert client.get(f"/book/{setup['service_id']}").status_code == 404


def test_details_form_shows_only_required_fields_clause_and_unticked_boxes(client, app, setup):
    _newsletter(app)
    response = client.get(details_url(setup["service_id"], _start()))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    for name in ("first_name", "last_name", "email"):
        assert f'name="{name}"' in html
    for name in ("phone", "street", "postal_code", "city"):
        assert f'name="{name}"' not in html
    # The information clause: who, why, legal basis, and the full notice.
    assert 'id="information-clause"' in html
    assert "Art. 6(1)(b)" in html and "to book and run your appointment" in html
    assert 'href="/privacy"' in html
    # Marketing: a separate box, not ticked, naming what and how.
    assert 'name="marketing"' in html
    marketing = (
        html.split('name="marketing"')[0].rsplit("<input", 1)[1]
        + html.split('name="marketing"')[1].split(">", 1)[0]
    )
    assert "checked" not in marketing
    assert "Newsletter" in html and "by email" in html
    # The honeypot: present, out of the tab order, never autofilled.
    honeypot = (
        html.split('name="website"')[1].split(">", 1)[0]
        + html.split('name="website"')[0].rsplit("<input", 1)[1]
    )
    assert 'tabindex="-1"' in honeypot and 'autocomplete="off"' in honeypot
    # Reminders rest on legitimate interest by default: a sentence, no box.
    assert 'name="reminders"' not in html and "how to stop them" in html


def test_organisation_privacy_notice_url_is_linked_when_set(client, app, setup):
    from crm.org.services import organisation_for_update

    with app.app_context():
        organisation_for_update().privacy_notice_url = "https://example.com/prywatność"
        db.session.commit()
    html = client.get(details_url(setup["service_id"], _start())).get_data(as_text=True)
    assert 'href="https://example.com/prywatność"' in html


def test_phone_only_service_asks_no_email_and_ignores_one(client, app, setup):
    with app.app_context():
        service_id = make_service([setup["staff_id"]], name="Telefon", required_data=["phone"]).id
    url = details_url(service_id, _start())
    html = client.get(url).get_data(as_text=True)
    assert 'name="phone"' in html
    assert 'name="email"' not in html and 'name="first_name"' not in html
    response = client.post(
        url, data={"phone": "601 234 567", "email": "x@example.com", "first_name": "Ewa"}
    )
    manage_path(response)
    with app.app_context():
        created = db.session.scalars(select(Client)).all()
        assert [(c.phone, c.email, c.first_name) for c in created] == [("+48601234567", "", "")]
    assert pending_booking_emails() == []  # no address, no email


# --- booking ---------------------------------------------------------------------------


def test_whole_flow_books_creates_client_and_sends_the_confirmation(client, app, setup):
    start = _start(11)
    page = client.get(f"/book/{setup['service_id']}?week={next_week()}")
    assert details_url(setup["service_id"], start).split("?")[1].split("&")[0] in page.get_data(
        as_text=True
    )
    response = _post(client, setup, start, first_name="Antonín", last_name="Dvořák")
    target = manage_path(response)
    assert target.startswith("/book/manage/") and "booked=1" in target
    done = client.get(target)
    html = done.get_data(as_text=True)
    assert done.status_code == 200 and "You are booked" in html and "Konsultacja" in html
    assert "Dvořák" not in html  # the manage page shows no client data
    [appointment] = appointments(app)
    assert appointment.source == AppointmentSource.ONLINE.value
    assert appointment.starts_at == start.astimezone(UTC)
    assert appointment.staff_id == setup["staff_id"]
    assert appointment.public_token
    with app.app_context():
        booked_for = db.session.get(Client, appointment.client_id)
        assert (booked_for.first_name, booked_for.last_name, booked_for.email) == (
            "Antonín",
            "Dvořák",
            "zofia@example.com",
        )
        assert booked_for.owner_id is None
        assert "dvorak" in booked_for.search_text
        entry = db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "client.create", AuditEntry.client_id == booked_for.id
            )
        ).one()
        assert entry.details["source"] == "online booking"
    # The email goes out after the commit, through the worker, and is stored.
    assert run_booking_emails(app) == 1
    with app.app_context():
        [sent] = db.session.scalars(select(SentMessage)).all()
        assert sent.client_id == appointment.client_id and sent.campaign_id is None
        message = email.message_from_bytes(sent.eml(), policy=policy.default)
    assert message["To"] == "zofia@example.com"
    assert "Konsultacja" in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert "Antonín Dvořák" in body
    assert "Konsultacja" in body and "ul. Piotrkowska 1, Łódź" in body and "Ada" in body
    assert "11:00" in body  # local time, Europe/Warsaw
    assert target.split("?")[0] in body  # the manage link
    [attachment] = [p for p in message.iter_attachments()]
    assert attachment.get_content_type() == "text/calendar"
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    [event] = calendar.walk("VEVENT")
    assert event.decoded("dtstart").astimezone(UTC) == start.astimezone(UTC)
    assert "Łódź" in str(event.get("location"))
    # A redelivered message is not sent or stored twice.
    with app.app_context():
        from crm.booking.services import send_booking_email

        send_booking_email.fn(appointment.client_id, _b64(sent.eml()))
        assert db.session.scalar(select(func.count()).select_from(SentMessage)) == 1


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")


def test_validation_errors_next_to_fields_and_nothing_booked(client, app, setup):
    response = _post(client, setup, email="not an address", last_name="")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'id="email-error"' in html and 'id="last_name-error"' in html
    assert appointments(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 0


def test_marketing_box_unticked_books_without_consent(client, app, setup):
    purpose_id = _newsletter(app)
    manage_path(_post(client, setup))
    with app.app_context():
        assert (
            db.session.scalar(
                select(func.count())
                .select_from(ConsentEvent)
                .where(ConsentEvent.purpose_id == purpose_id)
            )
            == 0
        )


def test_marketing_box_ticked_records_consent_with_evidence(client, app, setup):
    purpose_id = _newsletter(app)
    response = client.post(
        details_url(setup["service_id"], _start()),
        data=person(marketing="y"),
        headers={"User-Agent": UA, "Accept-Language": "pl"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    manage_path(response)
    with app.app_context():
        [event] = db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.purpose_id == purpose_id)
        ).all()
        assert event.kind == "given" and event.method == Method.WEB_FORM.value
        assert event.ip == "203.0.113.0"  # truncated
        assert event.user_agent == UA
        assert event.source_url.endswith(f"/book/{setup['service_id']}/details")
        assert event.notice.language == "pl"  # the page's language
        assert event.occurred_at is not None and event.actor_id is None
        state = db.session.scalars(
            select(ConsentState).where(ConsentState.purpose_id == purpose_id)
        ).one()
        assert state.status == "given"


def test_no_marketing_purpose_no_box(client, app, setup):
    html = client.get(details_url(setup["service_id"], _start())).get_data(as_text=True)
    assert 'name="marketing"' not in html
    manage_path(_post(client, setup, marketing="y"))  # ignored


def test_reminders_under_consent_ask_with_an_unticked_box(client, app, setup):
    from crm.appointments.reminders import reminders_purpose, set_reminders_basis

    with app.app_context():
        set_reminders_basis(LegalBasis.CONSENT, actor=None)
        db.session.commit()
        purpose_id = reminders_purpose().id
    html = client.get(details_url(setup["service_id"], _start())).get_data(as_text=True)
    box = html.split('name="reminders"')[1].split(">", 1)[0]
    assert "checked" not in box
    manage_path(_post(client, setup, _start(10)))
    manage_path(_post(client, setup, _start(12), email="ewa@example.com", reminders="y"))
    with app.app_context():
        states = {
            c.email: s.status
            for s, c in db.session.execute(
                select(ConsentState, Client)
                .join(Client, Client.id == ConsentState.client_id)
                .where(ConsentState.purpose_id == purpose_id)
            )
        }
    assert states == {"ewa@example.com": "given"}


def test_reminders_under_legitimate_interest_are_recorded_as_basis(client, app, setup):
    from crm.appointments.reminders import reminders_purpose

    manage_path(_post(client, setup))
    with app.app_context():
        purpose_id = reminders_purpose().id
        [event] = db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.purpose_id == purpose_id)
        ).all()
        assert event.method == Method.WEB_FORM.value and event.ip == "127.0.0.0"


def test_client_matched_by_email_any_case_and_only_empty_fields_filled(client, app, setup):
    with app.app_context():
        existing_id = make_client(
            first_name="Zofia", last_name="Wiśniewska", email="Zofia.W@Example.com"
        ).id
        service_id = make_service(
            [setup["staff_id"]], name="Pełne dane", required_data=["name", "email", "phone"]
        ).id
    response = client.post(
        details_url(service_id, _start()),
        data={
            "first_name": "Zosia",  # differs: never written over the card
            "last_name": "Wiśniewska",
            "email": "zofia.w@example.COM",
            "phone": "+48 601 234 567",  # empty on the card: filled
        },
    )
    manage_path(response)
    with app.app_context():
        clients = db.session.scalars(select(Client)).all()
        assert [c.id for c in clients] == [existing_id]
        assert clients[0].first_name == "Zofia" and clients[0].email == "Zofia.W@Example.com"
        assert clients[0].phone == "+48601234567"
    [appointment] = appointments(app)
    assert appointment.client_id == existing_id
    assert "Zosia" in appointment.notes


def test_client_matched_by_phone(client, app, setup):
    with app.app_context():
        existing_id = make_client(first_name="Jürgen", last_name="Müller", phone="+48601234567").id
        service_id = make_service([setup["staff_id"]], name="SMS", required_data=["phone"]).id
    for hour in (10, 12):
        manage_path(client.post(details_url(service_id, _start(hour)), data={"phone": "601234567"}))
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 1
    assert {a.client_id for a in appointments(app)} == {existing_id}


def test_honeypot_answers_like_success_and_books_nothing(client, app, setup):
    response = _post(client, setup, website="http://spam.example")
    assert response.status_code == 200
    assert 'id="booking-received"' in response.get_data(as_text=True)
    assert appointments(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 0


def test_rate_limit_gives_a_friendly_429(app, setup, database_url, tmp_path):
    # The suite's app has the limiter off; an app of its own switches it on.
    limited = make_test_app(database_url, tmp_path, RATELIMIT_ENABLED=True)
    try:
        http = limited.test_client()
        codes = [_post(http, setup, email="bad").status_code for _ in range(11)]
        assert codes[:10] == [422] * 10
        assert codes[10] == 429
        html = _post(http, setup, email="bad").get_data(as_text=True)
        assert 'id="booking-limited"' in html
        # Only POST is limited: the form still shows.
        assert http.get(details_url(setup["service_id"], _start())).status_code == 200
        # Another address has its own count.
        other = _post(http, setup, email="bad", environ_base={"REMOTE_ADDR": "198.51.100.9"})
        assert other.status_code == 422
    finally:
        limiter.reset()
        limiter.enabled = False
    assert appointments(app) == []


def test_slot_taken_meanwhile_gives_409(client, app, setup):
    start = _start()
    with app.app_context():
        other_id = make_client(first_name="Jan", last_name="Kowalski").id
        appointment_services.book(
            service=appointment_services.get_service(setup["service_id"]),
            staff_id=setup["staff_id"],
            client_id=other_id,
            starts_at=start.astimezone(UTC),
        )
        db.session.commit()
    response = _post(client, setup, start)
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert 'id="slot-taken"' in html and f"/book/{setup['service_id']}?" in html
    assert len(appointments(app)) == 1
    assert client.get(details_url(setup["service_id"], start)).status_code == 409


def test_anyone_books_whoever_is_still_free(client, app, setup):
    start = _start()
    with app.app_context():
        other = make_user("jan@example.com", role="admin", name="Jan Nowak").id
        every_day(other)
        service = appointment_services.get_service(setup["service_id"])
        service.staff = [*service.staff, db.session.get(type(service.staff[0]), other)]
        db.session.commit()
        someone_id = make_client(first_name="Jan", last_name="Kowalski").id
        appointment_services.book(
            service=appointment_services.get_service(setup["service_id"]),
            staff_id=setup["staff_id"],
            client_id=someone_id,
            starts_at=start.astimezone(UTC),
        )
        db.session.commit()
    manage_path(_post(client, setup, start))
    assert sorted(a.staff_id for a in appointments(app)) == sorted([setup["staff_id"], other])
    # Asking for the busy one by name is refused.
    assert (
        _post(client, setup, start, staff=setup["staff_id"], email="x@example.com").status_code
        == 409
    )


def test_booking_window_is_honoured(client, app, setup):
    with app.app_context():
        service = appointment_services.get_service(setup["service_id"])
        service.min_notice_hours = 24 * 30  # next week (and the week shown) is too soon
        db.session.commit()
    assert _post(client, setup).status_code == 409
    page = client.get(f"/book/{setup['service_id']}?week={next_week()}")
    assert 'id="no-times"' in page.get_data(as_text=True)
    with app.app_context():
        service = appointment_services.get_service(setup["service_id"])
        service.min_notice_hours = 0
        service.max_days_ahead = 3  # next week is too far
        db.session.commit()
    assert _post(client, setup).status_code == 409
    assert appointments(app) == []


def test_bad_start_is_a_400_page(client, setup):
    response = client.get(f"/book/{setup['service_id']}/details?start=tomorrow")
    assert response.status_code == 400
    assert 'id="booking-error"' in response.get_data(as_text=True)
    naive = client.get(f"/book/{setup['service_id']}/details?start=2030-01-01T10:00:00")
    assert naive.status_code == 400


def test_confirmation_email_in_the_visitors_language(client, app, setup):
    response = client.post(
        details_url(setup["service_id"], _start()),
        data=person(first_name="Łucja", last_name="Dvořáková"),
        headers={"Accept-Language": "pl"},
    )
    manage_path(response)
    [(_client_id, raw)] = pending_booking_emails()
    message = email.message_from_bytes(raw, policy=policy.default)
    body = message.get_body(("plain",)).get_content()
    assert "Łucja Dvořáková" in body
    assert "Łódź" in body


def test_restricted_client_is_booked_but_not_changed(client, app, setup):
    from crm.sqltypes import utcnow

    with app.app_context():
        existing_id = make_client(
            email="zofia@example.com", first_name="", restricted_at=utcnow()
        ).id
    manage_path(_post(client, setup))
    with app.app_context():
        assert db.session.get(Client, existing_id).first_name == ""
    assert [a.client_id for a in appointments(app)] == [existing_id]


def test_start_in_the_past_or_slot_off_grid_is_taken(client, setup):
    start = _start().replace(minute=7)
    assert _post(client, setup, start).status_code == 409
    past = _start() - timedelta(days=30)
    assert _post(client, setup, past).status_code == 409


def test_slot_taken_inside_the_booking_transaction_gives_409(client, app, setup, monkeypatch):
    """The race itself: the page still thought the time free, book() finds it taken."""
    from crm.booking import services as booking

    start = _start()
    with app.app_context():
        other_id = make_client(first_name="Jan", last_name="Kowalski").id
        appointment_services.book(
            service=appointment_services.get_service(setup["service_id"]),
            staff_id=setup["staff_id"],
            client_id=other_id,
            starts_at=start.astimezone(UTC),
        )
        db.session.commit()
    monkeypatch.setattr(booking, "free_staff_at", lambda *a, **k: [setup["staff_id"]])
    response = _post(client, setup, start)
    assert response.status_code == 409
    assert 'id="slot-taken"' in response.get_data(as_text=True)
    assert len(appointments(app)) == 1
    with app.app_context():
        # Rolled back with the booking: no client card for a booking that failed.
        assert db.session.scalar(select(func.count()).select_from(Client)) == 1


def test_anyone_falls_back_to_the_next_staff_member_on_a_race(client, app, setup, monkeypatch):
    from crm.booking import services as booking

    start = _start()
    with app.app_context():
        other = make_user("jan@example.com", role="admin", name="Jan Nowak").id
        every_day(other)
        service = appointment_services.get_service(setup["service_id"])
        service.staff = [*service.staff, db.session.get(type(service.staff[0]), other)]
        db.session.commit()
        someone_id = make_client(first_name="Jan", last_name="Kowalski").id
        appointment_services.book(
            service=appointment_services.get_service(setup["service_id"]),
            staff_id=setup["staff_id"],
            client_id=someone_id,
            starts_at=start.astimezone(UTC),
        )
        db.session.commit()
    monkeypatch.setattr(booking, "free_staff_at", lambda *a, **k: [setup["staff_id"], other])
    manage_path(_post(client, setup, start))
    mine = [a for a in appointments(app) if a.client_id != someone_id]
    assert [a.staff_id for a in mine] == [other]
