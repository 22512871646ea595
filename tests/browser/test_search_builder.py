"""What a person clicks in the advanced search: build `"Contract" < 1 AND city = "Łódź"`
with the filter builder, see its text, save it, reload, apply the saved filter and get
the same rows and count; the text box drives the builder too; and it all fits a phone.

The browser tests share one database (see conftest.py): these use a user of their own
(own columns, own saved filters) and clients named Builder-…; other tests' clients may
match the same query, so rows are compared before and after, and ours are checked by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import LiveServer, login

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect

USER = "builder@example.com"
TEXT = 'Contract < 1 AND city = "Łódź"'


def seed(live_server: LiveServer) -> str:
    """The checkbox field "Contract" (another test may have made it already) and four
    clients; returns the field's reference."""

    def run() -> str:
        from sqlalchemy import func, select

        from crm.clients.models import Client
        from crm.extensions import db
        from crm.fields.models import CustomField, FieldType
        from crm.fields.services import FieldSpec, create_field
        from tests.conftest import make_client

        field = db.session.scalar(
            select(CustomField).where(func.lower(CustomField.label) == "contract")
        )
        if field is None:
            field = create_field(FieldSpec("Contract", FieldType.CHECKBOX, []))
            db.session.commit()
        assert field.field_type == "checkbox" and not field.is_archived
        key = field.key
        if not db.session.scalar(select(Client.id).where(Client.last_name == "Builder-Ala")):
            make_client(first_name="Ala", last_name="Builder-Ala", city="Łódź", custom={key: 0})
            make_client(first_name="Ola", last_name="Builder-Ola", city="Łódź", custom={})
            make_client(first_name="Ela", last_name="Builder-Ela", city="Łódź", custom={key: 1})
            make_client(first_name="Iza", last_name="Builder-Iza", city="Brno", custom={})
        return f"cf:{key}"

    ref = live_server.run(run)
    if not live_server.run(lambda: _user_exists(USER)):
        live_server.add_user(USER)
    return ref


def _user_exists(email: str) -> bool:
    from sqlalchemy import select

    from crm.auth.models import User
    from crm.extensions import db

    return db.session.scalar(select(User.id).where(User.email == email)) is not None


class Settled:
    """Waits for htmx to finish answering an action (its swap settled). The builder's
    answer re-renders its inputs, so the next choice must wait for it, as a person's
    does (htmx queues a second change; its values are read after the first answer)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        page.evaluate(
            "document.addEventListener('htmx:afterSettle',"
            " () => { document.body.dataset.settled = '1'; })"
        )

    def after(self, act: Callable[[], object]) -> None:
        self.page.evaluate("document.body.dataset.settled = '0'")
        act()
        expect(self.page.locator("body")).to_have_attribute("data-settled", "1")


def rows_and_count(page: Page) -> tuple[list[str], str]:
    names = page.locator("table.client-table tbody td strong").all_inner_texts()
    return sorted(names), page.locator("#client-count").inner_text().strip()


def test_build_save_reload_and_apply(page: Page, live_server: LiveServer) -> None:
    ref = seed(live_server)
    login(page, USER)
    page.goto("/clients/")
    page.locator("#builder-panel > summary").click()
    settled = Settled(page)

    # First condition: Contract < 1 (a checkbox: yes (1) / no (0)).
    settled.after(lambda: page.get_by_role("button", name="+ Add condition").first.click())
    field = page.locator('select[name="r.0.field"]')
    expect(field).to_be_focused()  # a new row takes the focus
    settled.after(lambda: field.select_option(ref))
    settled.after(lambda: page.locator('select[name="r.0.op"]').select_option("<"))
    settled.after(lambda: page.locator('select[name="r.0.value"]').select_option("1"))
    expect(page.locator("#q")).to_have_value("Contract < 1")

    # Second: city = "Łódź", typed; Enter applies.
    settled.after(lambda: page.get_by_role("button", name="+ Add condition").first.click())
    expect(page.locator('select[name="r.1.field"]')).to_be_focused()
    settled.after(lambda: page.locator('select[name="r.1.field"]').select_option("city"))
    expect(page.locator('select[name="r.1.op"]')).to_have_value("=")
    page.locator('input[name="r.1.value"]').fill("Łódź")
    settled.after(lambda: page.locator('input[name="r.1.value"]').press("Enter"))

    # The text form, the list and the address follow.
    expect(page.locator("#q")).to_have_value(TEXT)
    expect(page.locator("table.client-table")).to_contain_text("Builder-Ola")
    built_rows, built_count = rows_and_count(page)
    assert "Ala Builder-Ala" in built_rows and "Ola Builder-Ola" in built_rows
    assert "Ela Builder-Ela" not in built_rows and "Iza Builder-Iza" not in built_rows
    assert "q=" in page.url

    # Save it.
    page.locator("#save-search summary").click()
    page.locator("#save-name").fill("Bez umowy w Łodzi")
    page.locator("#save-search").get_by_role("button", name="Save", exact=True).click()
    saved = page.locator("#saved-filters a.filter-name", has_text="Bez umowy w Łodzi")
    expect(saved).to_be_visible()
    expect(page.locator("#save-search .save-notice")).to_contain_text("Search saved")

    # Reload the plain list, then apply the saved filter.
    page.goto("/clients/")
    expect(page.locator("#q")).to_have_value("")
    item = page.locator("#saved-filters li.filter-item").filter(has_text="Bez umowy w Łodzi")
    link = item.locator("a.filter-name")
    count_badge = item.locator(".count")
    expect(count_badge).not_to_have_text("…")  # the live count loaded
    link.click()
    page.wait_for_url("**/clients/?q=*")
    expect(page.locator("#q")).to_have_value(TEXT)
    assert rows_and_count(page) == (built_rows, built_count)
    assert count_badge.inner_text().strip() in built_count
    # The builder shows the same two conditions again.
    expect(page.locator("#builder-panel")).to_have_attribute("open", "")
    expect(page.locator('select[name="r.0.field"]')).to_have_value(ref)
    expect(page.locator('select[name="r.0.op"]')).to_have_value("<")
    expect(page.locator('input[name="r.1.value"]')).to_have_value("Łódź")


def test_typing_in_the_search_box_updates_the_builder(page: Page, live_server: LiveServer) -> None:
    seed(live_server)
    login(page, USER)
    page.goto("/clients/")
    page.locator("#builder-panel > summary").click()
    page.locator("#q").fill('city = "Brno" OR NOT Builder-Ala')
    expect(page.locator('select[name="r.join"]')).to_have_value("or")
    expect(page.locator('select[name="r.0.field"]')).to_have_value("city")
    expect(page.locator('input[name="r.0.value"]')).to_have_value("Brno")
    expect(page.locator('input[name="r.1.not"]')).to_be_checked()
    expect(page.locator('input[name="r.1.value"]')).to_have_value("Builder-Ala")
    # Too deep for the builder: it says so, and the text stays.
    page.locator("#q").fill("a OR (b AND (c OR d))")
    expect(page.locator(".builder-notice")).to_contain_text("cannot show this query")
    expect(page.locator("#q")).to_have_value("a OR (b AND (c OR d))")


def test_builder_and_selection_fit_a_phone(page: Page, live_server: LiveServer) -> None:
    seed(live_server)
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, USER)
    page.goto("/clients/?q=Builder")
    page.locator("#builder-panel > summary").click()
    settled = Settled(page)
    settled.after(lambda: page.get_by_role("button", name="+ Add group").click())
    expect(page.locator('select[name="r.1.0.field"]')).to_be_focused()
    settled.after(lambda: page.locator('select[name="r.1.0.field"]').select_option("created"))
    settled.after(lambda: page.locator('select[name="r.1.0.op"]').select_option(">"))
    settled.after(lambda: page.locator('select[name="r.1.0.mode"]').select_option("ago"))
    days = page.locator('input[name="r.1.0.value"][type="number"]')  # was a date input
    days.fill("30")
    settled.after(lambda: days.press("Enter"))
    expect(page.locator("#q")).to_have_value("Builder AND created > -30d")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390px ({width}px)"
    # Tick every row on the page and ask for a tag: the confirmation counts them.
    page.locator("#select-page").check()
    page.locator("#mass-action").select_option("tag_add")
    page.locator("#mass-go").click()
    expect(page.locator("#mass-panel")).to_contain_text("clients selected")
