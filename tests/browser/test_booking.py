"""Online booking as a customer does it on a phone (390x844, no account): a service, a
free time, only the details the service needs, the information clause and the
unticked marketing box, the confirmation page and the email with its .ics; then staff
see the booking in the week view, and once the clock reaches the evening before, the
day-before SMS is in the outbox.

Names carry a per-run tag (one shared database for the browser tests).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, time, timedelta
from pathlib import Path
from time import sleep
from typing import TYPE_CHECKING

import icalendar
import pytest

from tests.appointments.factories import WARSAW, every_day, make_service, next_week
from tests.browser.conftest import (
    ADMIN_EMAIL,
    TIMEOUT_MS,
    VIEWPORT,
    LiveServer,
    PageProblems,
    login,
    outbox_messages,
    watch,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect

PHONE = {"width": 390, "height": 844}


def _seed(live_server: LiveServer, tag: str) -> tuple[int, int]:
    def seed() -> tuple[int, int]:
        from sqlalchemy import select

        from crm.auth.models import User
        from crm.consents.models import ConsentPurpose, LegalBasis
        from crm.consents.services import PurposeSpec, create_purpose
        from crm.extensions import db
        from crm.org.services import organisation_for_update

        org = organisation_for_update()
        org.name = "Salon Łódź"
        org.privacy_contact = "rodo@example.pl"
        newsletter = select(ConsentPurpose.id).where(ConsentPurpose.key == "newsletter")
        if db.session.scalar(newsletter) is None:
            create_purpose(
                PurposeSpec(
                    name="Newsletter",
                    key="newsletter",
                    legal_basis=LegalBasis.CONSENT,
                    retention_months=24,
                    channels=["email"],
                ),
                {"en": "Monthly news and offers by email."},
                by=None,
            )
        db.session.commit()
        staff = db.session.scalar(select(User.id).where(User.email == ADMIN_EMAIL))
        every_day(staff, time(9), time(17))
        service = make_service(
            [staff],
            name=f"Strzyżenie {tag}",
            required_data=["name", "email", "phone"],
            reminder_channels=["email", "sms"],
            reminder_days_before=1,
            reminder_hour=18,
        )
        return staff, service.id

    return live_server.run(seed)


def _booked(live_server: LiveServer, email: str) -> dict[str, object]:
    def find() -> dict[str, object]:
        from sqlalchemy import select

        from crm.appointments.models import Appointment
        from crm.clients.models import Client
        from crm.extensions import db

        row = db.session.execute(
            select(Appointment, Client).join(Client).where(Client.email == email)
        ).one()
        appointment, client = row
        return {
            "id": appointment.id,
            "starts_at": appointment.starts_at,
            "source": appointment.source,
            "first_name": client.first_name,
            "last_name": client.last_name,
            "phone": client.phone,
        }

    return live_server.run(find)


def _sms_outbox(outbox: Path, phone: str) -> list[dict[str, object]]:
    found = []
    for path in sorted(outbox.glob("*.sms.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("to") == phone:
            found.append(data)
    return found


def test_book_on_a_phone_then_staff_see_it_and_the_sms_goes_out(
    browser: Browser,
    live_server: LiveServer,
    problems: PageProblems,
    worker: Path,
) -> None:
    tag = uuid.uuid4().hex[:6]
    _staff, service_id = _seed(live_server, tag)
    email = f"zdenek.{tag}@example.cz"
    day = next_week()

    customer = browser.new_context(viewport=PHONE, base_url=live_server.url)
    customer.set_default_timeout(TIMEOUT_MS)
    page = watch(customer.new_page(), problems)
    page.goto("/book")
    page.get_by_role("link", name=f"Strzyżenie {tag}").first.click()
    page.wait_for_url(re.compile(rf"/book/{service_id}"))
    # The week of next week, whatever today is: its days have free times.
    page.goto(f"/book/{service_id}?week={day.isoformat()}")
    page.locator(".booking-times a").first.click()
    page.wait_for_url(re.compile(r"/details"))

    # Only what the service needs: name, email, phone; no address.
    expect(page.get_by_label("First name")).to_be_visible()
    expect(page.get_by_label("Phone")).to_be_visible()
    assert page.get_by_label("Street").count() == 0
    clause = page.locator("#information-clause")
    expect(clause).to_contain_text("Salon Łódź")
    expect(clause).to_contain_text("Art. 6(1)(b)")
    expect(page.locator("#privacy-notice-link")).to_have_attribute("href", re.compile("privacy"))
    marketing = page.get_by_role("checkbox", name=re.compile("news", re.I))
    expect(marketing).not_to_be_checked()
    # Nothing on the page is wider than the phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    page.get_by_label("First name").fill("Zdeněk")
    page.get_by_label("Last name").fill("Šťastný")
    page.locator("#email").fill(email)
    page.get_by_label("Phone").fill("+420 601 123 456")
    page.get_by_role("button", name="Book").click()
    expect(page.locator("h1")).to_have_text("You are booked")
    expect(page.locator("#booking-manage")).to_contain_text(f"Strzyżenie {tag}")
    booked = _booked(live_server, email)
    assert booked["source"] == "online"
    assert (booked["first_name"], booked["last_name"]) == ("Zdeněk", "Šťastný")
    starts_at = booked["starts_at"]
    assert isinstance(starts_at, datetime)

    # The confirmation email, with the .ics of the appointment (sent by the worker).
    messages = []
    for _ in range(100):
        messages = outbox_messages(worker, tag)
        if messages:
            break
        sleep(0.1)
    assert len(messages) == 1, "one booking confirmation"
    message = messages[0]
    assert f"Strzyżenie {tag}" in message.get_body(("plain",)).get_content()
    ics = [
        part for part in message.iter_attachments() if part.get_content_type() == "text/calendar"
    ]
    assert len(ics) == 1
    calendar = icalendar.Calendar.from_ical(ics[0].get_content())
    event = next(iter(calendar.walk("VEVENT")))
    assert event.decoded("DTSTART") == starts_at.astimezone(WARSAW)
    customer.close()

    # Staff see it in the week view.
    staff_context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    staff_context.set_default_timeout(TIMEOUT_MS)
    staff_page = watch(staff_context.new_page(), problems)
    login(staff_page)
    staff_page.goto(f"/appointments/?view=week&date={day.isoformat()}")
    expect(staff_page.locator("main")).to_contain_text("Šťastný")
    staff_context.close()

    # The clock reaches 18:00 the evening before: the sweep claims what is due (the
    # booking's confirmation SMS and the day-before reminders), the worker sends them.
    local_start = starts_at.astimezone(WARSAW)
    evening_before = datetime.combine(
        local_start.date() - timedelta(days=1), time(18, 1), tzinfo=WARSAW
    )

    def advance() -> dict[str, int]:
        from crm.appointments.tasks import sweep
        from crm.extensions import db

        figures = sweep(evening_before)
        db.session.commit()
        return figures

    assert live_server.run(advance)["claimed"] >= 1
    phone = str(booked["phone"])
    sent: list[str] = []
    for _ in range(100):
        sent = [str(sms["body"]) for sms in _sms_outbox(worker, phone)]
        if len(sent) >= 2:
            break
        sleep(0.1)
    reminders = [text for text in sent if "Reminder:" in text]
    assert len(reminders) == 1, sent
    assert len([text for text in sent if "Booked:" in text]) == 1, sent
    text = reminders[0]
    assert "Salon Łódź" in text and f"Strzyżenie {tag}" in text
    assert local_start.strftime("%-I:%M") in text  # the local time, in the org's locale
    assert "/sms/stop/" in text
