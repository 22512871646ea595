"""What a person clicks in the appointment book: htmx navigation with the URL kept in
step, booking a free time for a client picked by search, keyboard only, and the card's
lazily loaded appointments section."""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.appointments.factories import every_day, make_service, next_week
from tests.browser.conftest import ADMIN_EMAIL, LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect


def _seed(live_server: LiveServer) -> tuple[int, int]:
    def seed() -> tuple[int, int]:
        from sqlalchemy import select

        from crm.auth.models import User
        from crm.extensions import db
        from tests.conftest import make_client

        staff = db.session.scalar(select(User.id).where(User.email == ADMIN_EMAIL))
        every_day(staff, time(9), time(12))
        make_service([staff], name="Koloryzacja Dvořák")
        client = make_client(first_name="Małgorzata", last_name="Żółkiewska-Browser")
        return staff, client.id

    return live_server.run(seed)


def test_navigate_and_book_with_the_keyboard(logged_in: Page, live_server: LiveServer):
    tab = logged_in
    staff, client_id = _seed(live_server)
    day = next_week()
    tab.goto(f"/appointments/?date={day}&staff={staff}")
    tab.evaluate("window.__noReload = true")
    # Next day via htmx: the grid changes, the page does not reload, the URL follows.
    tab.locator("a[accesskey=n]").focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(rf"date={day + timedelta(days=1)}"))
    expect(tab.locator(".cal-title")).to_contain_text(str((day + timedelta(days=1)).day))
    assert tab.evaluate("window.__noReload") is True
    tab.go_back()
    tab.wait_for_url(re.compile(rf"date={day}"))
    # Book 10:00: tab to the slot link, Enter, find the client, choose, submit.
    slot = tab.get_by_role("link", name=re.compile(r"Book 10:00 with"))
    slot.focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(r"/appointments/new"))
    tab.get_by_label("Find a client").fill("zolkiewska")
    option = tab.get_by_label(re.compile("Małgorzata Żółkiewska-Browser"))
    expect(option).to_be_visible()
    option.check()
    tab.get_by_role("button", name="Book", exact=True).press("Enter")
    tab.wait_for_url(re.compile(r"/appointments/\?"))
    expect(tab.locator(".flash-success")).to_contain_text("Koloryzacja Dvořák")
    expect(tab.locator(".cal-event").first).to_contain_text("Żółkiewska-Browser")
    # The card loads its appointments section after the tab.
    tab.goto(f"/clients/{client_id}")
    section = tab.locator("#appointments")
    expect(section).to_contain_text("Koloryzacja Dvořák")
    expect(section.get_by_role("button", name=re.compile("Book an appointment"))).to_be_visible()
