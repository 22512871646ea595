"""What a person clicks: create clients, edit a card inline with htmx, add a custom field,
see and sort it in the list, search, and lose the session mid-edit.

The tests share one database (see conftest.py), so each uses names of its own and only
looks at its own rows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import ADMIN_EMAIL, LiveServer, PageProblems, htmx_settled, login
from tests.conftest import TEST_PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect


# -- helpers -------------------------------------------------------------------------


def create_client_via_form(
    page: Page, first: str, last: str, city: str = "", email: str = ""
) -> str:
    """Fill the New client form as a person would; return the new card's path."""
    page.goto("/clients/")
    page.locator(".page-head").get_by_role("button", name="New client").click()
    page.wait_for_url("**/clients/new")
    page.get_by_label("First name").fill(first)
    page.get_by_label("Last name").fill(last)
    if city:
        page.get_by_label("City").fill(city)
    if email:
        page.get_by_label("Email", exact=True).fill(email)
    page.get_by_role("button", name="Create client").click()
    page.wait_for_url(re.compile(r"/clients/\d+$"))
    heading = page.locator("h1")
    assert heading.inner_text().strip() == f"{first} {last}"
    assert page.locator(".flash-success").count() == 1
    return "/clients/" + page.url.rsplit("/", 1)[1]


class FullLoads:
    """Counts full page loads, and plants a marker in `window` that a reload would wipe."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.count = 0
        page.on("load", self._loaded)

    def _loaded(self, _page: Page) -> None:
        self.count += 1

    def arm(self) -> None:
        self.count = 0
        self.page.evaluate("window.__marker = 1")

    def assert_none(self) -> None:
        assert self.count == 0, "the page was reloaded"
        assert self.page.evaluate("window.__marker") == 1, "the page was replaced"


def open_inline_editor(page: Page, group: str) -> Locator:
    """Click a card group and wait for its htmx editor to replace it."""
    page.locator(f"div.editable#grp-{group}").click()
    form = page.locator(f"form.inline-edit#grp-{group}")
    form.wait_for()
    assert page.locator(f"div.editable#grp-{group}").count() == 0
    return form


def save_inline(page: Page, form: Locator, group: str) -> Locator:
    form.get_by_role("button", name="Save").click()
    shown = page.locator(f"div.editable#grp-{group}")
    shown.wait_for()
    assert page.locator(f"form.inline-edit#grp-{group}").count() == 0
    return shown


def list_rows(page: Page) -> list[list[str]]:
    """The client table as text, row by row (name first)."""
    return [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in page.locator("table.client-table tbody tr").all()
    ]


def column_index(page: Page, label: str) -> int:
    headers = [h.strip() for h in page.locator("table.client-table thead th").all_inner_texts()]
    assert label in headers, headers
    return headers.index(label)


def names_in_order(page: Page, wanted: list[str]) -> list[str]:
    """Which of `wanted` the list shows, in the order shown."""
    shown = [row[0].splitlines()[0] for row in list_rows(page)]
    return [name for name in shown if name in wanted]


# -- the acceptance test -------------------------------------------------------------


def test_client_card_custom_field_and_list(logged_in: Page) -> None:
    page = logged_in
    loads = FullLoads(page)

    # Three clients through the form, so sorting has something to show.
    lucja = "Łucja Dvořák-Müller"
    others = ["Adam Abacki", "Zenon Żywiecki"]
    card = create_client_via_form(
        page, "Łucja", "Dvořák-Müller", city="Łódź", email="lucja@example.com"
    )
    create_client_via_form(page, "Adam", "Abacki", city="Kraków")
    create_client_via_form(page, "Zenon", "Żywiecki", city="Gdańsk")

    # Inline edit of the email: an htmx swap, not a page load.
    page.goto(card)
    assert "Łódź" in page.locator("#grp-address").inner_text()
    loads.arm()
    form = open_inline_editor(page, "email")
    email_input = form.get_by_label("Email", exact=True)
    assert email_input.input_value() == "lucja@example.com"
    email_input.fill("l.dvorak-muller@example.org")
    shown = save_inline(page, form, "email")
    assert shown.inner_text().strip() == "l.dvorak-muller@example.org"
    loads.assert_none()

    # An invalid value keeps the editor open with the error next to the input.
    form = open_inline_editor(page, "email")
    form.get_by_label("Email", exact=True).fill("not an email")
    form.get_by_role("button", name="Save").click()
    page.locator("form.inline-edit#grp-email .field-error").wait_for()
    assert form.get_by_label("Email", exact=True).get_attribute("aria-invalid") == "true"
    # Escape cancels, and the stored value comes back (once htmx set the new form up).
    htmx_settled(page)
    form.get_by_label("Email", exact=True).press("Escape")
    page.locator("div.editable#grp-email").wait_for()
    assert "l.dvorak-muller@example.org" in page.locator("#grp-email").inner_text()
    loads.assert_none()
    page.reload()
    assert "l.dvorak-muller@example.org" in page.locator("#grp-email").inner_text()

    # A checkbox custom field, shown as a list column, added through the admin menu.
    page.locator("header.topbar summary", has_text="Admin").click()
    page.get_by_role("link", name="Custom fields").click()
    page.wait_for_url("**/admin/fields/")
    page.locator(".page-head").get_by_role("button", name="Add field").click()
    page.wait_for_url("**/admin/fields/new")
    page.get_by_label("Label").fill("Contract")
    page.get_by_label("Type").select_option("checkbox")
    page.get_by_label("Show as a column in the client list").check()
    page.get_by_role("button", name="Add field").click()
    page.wait_for_url("**/admin/fields/")
    row = page.locator("#fields-table tbody tr", has_text="Contract")
    assert row.count() == 1
    assert "in list" in row.inner_text()

    # Tick it on the card, inline.
    page.goto(card)
    group = page.locator("#custom-fields dt", has_text="Contract").locator("+ dd > .editable")
    group_id = group.get_attribute("id")
    assert group_id and group_id.startswith("grp-cf_")
    cf_group = group_id.removeprefix("grp-")
    loads.arm()
    form = open_inline_editor(page, cf_group)
    form.get_by_label("Contract").check()
    shown = save_inline(page, form, cf_group)
    assert shown.inner_text().strip() == "Yes"
    loads.assert_none()

    # The list shows it as a column.
    page.locator("header.topbar").get_by_role("link", name="Clients").click()
    page.wait_for_url("**/clients/")
    contract = column_index(page, "Contract")
    values = {row[0].splitlines()[0]: row[contract] for row in list_rows(page)}
    assert values[lucja] == "Yes"
    assert all(values[name] == "No" for name in others)
    assert names_in_order(page, [lucja, *others]) == ["Adam Abacki", lucja, "Zenon Żywiecki"]

    # Sort by it: one click ascending (empty and No before Yes), another descending.
    header = page.locator("table.client-table thead th", has_text="Contract")
    loads.arm()
    header.get_by_role("link").click()
    page.locator(
        "table.client-table thead th[aria-sort='ascending']", has_text="Contract"
    ).wait_for()
    assert "sort=cf" in page.url, "the sorted list should have its own address"
    assert names_in_order(page, [lucja, *others]) == [*others, lucja]
    column = [row[contract] for row in list_rows(page)]
    assert column == sorted(column, key=lambda v: v == "Yes")

    page.locator("table.client-table thead th", has_text="Contract").get_by_role("link").click()
    page.locator(
        "table.client-table thead th[aria-sort='descending']", has_text="Contract"
    ).wait_for()
    assert names_in_order(page, [lucja, *others])[0] == lucja
    assert page.locator("table.client-table thead th[aria-sort]").count() == 1
    loads.assert_none()

    # The sorted address survives a reload (hx-push-url gave it a real URL).
    page.reload()
    assert (
        page.locator("table.client-table thead th", has_text="Contract").get_attribute("aria-sort")
        == "descending"
    )

    # Quick search ignores case and accents in names, and keeps the page.
    page.goto("/clients/")
    search = page.get_by_role("searchbox", name="Search clients")
    for query in ("dvorak", "LUCJA muller", "Łucja"):
        loads.arm()
        search.fill(query)
        # hx-push-url puts each search in the address: wait for this one's results.
        page.wait_for_url(lambda url, q=query: parse_qs(urlsplit(url).query).get("q") == [q])
        page.wait_for_function(
            "() => document.querySelectorAll('table.client-table tbody tr').length === 1"
        )
        assert names_in_order(page, [lucja, *others]) == [lucja], query
        loads.assert_none()
    search.fill("Nobody-by-this-name")
    empty = page.locator("#client-list article.empty")
    empty.wait_for()
    assert "No client matches" in empty.inner_text()
    empty.get_by_role("link", name="Show all clients").click()
    page.locator("table.client-table").wait_for()


def test_card_keyboard(page: Page, live_server: LiveServer) -> None:
    from tests.conftest import make_client

    client_id = live_server.run(
        lambda: make_client(first_name="Růžena", last_name="Čermák", email="ruzena@example.cz").id
    )
    login(page)
    page.goto(f"/clients/{client_id}")
    # Tabbing onto a group focuses it without opening the editor.
    email_group = page.locator("div.editable#grp-email")
    email_group.focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Tab")
    expect(email_group).to_be_focused()
    page.wait_for_timeout(300)  # an htmx request would have started by now
    assert page.locator("form.inline-edit").count() == 0
    # Enter opens it, with the input focused; Escape closes it.
    page.keyboard.press("Enter")
    form = page.locator("form.inline-edit#grp-email")
    form.wait_for()
    # Focus moves in htmx's load event, just after the swap: wait for it.
    expect(form.get_by_label("Email", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    page.locator("div.editable#grp-email").wait_for()


def test_new_client_form_shows_errors(logged_in: Page) -> None:
    page = logged_in
    page.goto("/clients/new")
    page.get_by_label("First name").fill("Věra")
    page.get_by_label("Email", exact=True).fill("vera@@example")
    page.get_by_role("button", name="Create client").click()
    page.locator(".flash-error[role=alert]").wait_for()
    assert page.url.endswith("/clients/new")
    email = page.get_by_label("Email", exact=True)
    assert email.get_attribute("aria-invalid") == "true"
    error_id = email.get_attribute("aria-describedby")
    assert error_id and page.locator(f"#{error_id}").inner_text().strip()
    # What was typed is kept.
    assert page.get_by_label("First name").input_value() == "Věra"


def lose_session_mid_edit(page: Page, live_server: LiveServer, problems: PageProblems) -> int:
    """Open a card, drop the cookies (an expired session), click a group; return the id."""
    from tests.conftest import make_client

    client_id = live_server.run(
        lambda: make_client(first_name="Bořivoj", last_name="Šťastný", city="Brno").id
    )
    # The refused htmx request is a 401, which Chromium reports on the console.
    problems.allow(r"status of 401")
    login(page)
    page.goto(f"/clients/{client_id}")
    # Sections the card loads after itself answer with a refreshed session cookie: let
    # them finish, or one would sign the browser in again after the cookies are gone.
    page.wait_for_load_state("networkidle")
    page.context.clear_cookies()
    page.locator("div.editable#grp-phone").click()
    page.wait_for_url(re.compile(r"/login\?next="))
    return client_id


def test_htmx_request_after_logout_goes_to_login(
    page: Page, live_server: LiveServer, problems: PageProblems
) -> None:
    lose_session_mid_edit(page, live_server, problems)
    # A whole login page, not a login form swapped into the card.
    assert page.locator("#grp-phone").count() == 0
    assert page.locator("header.topbar").count() == 0
    assert page.get_by_role("button", name="Sign in").count() == 1
    assert page.get_by_label("Password").count() == 1


def test_signing_in_again_returns_to_the_card(
    page: Page, live_server: LiveServer, problems: PageProblems
) -> None:
    client_id = lose_session_mid_edit(page, live_server, problems)
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert re.search(rf"/clients/{client_id}$", page.url), page.url
    assert page.locator("div.editable#grp-phone").count() == 1


def test_column_chooser(page: Page, live_server: LiveServer) -> None:
    # Column choices are saved per user: use an account of its own.
    from tests.conftest import make_client

    live_server.add_user("columns@example.com")
    live_server.run(lambda: make_client(first_name="Jürgen", last_name="Lößl", company="Köhler"))
    login(page, "columns@example.com")
    page.goto("/clients/")
    headers = page.locator("table.client-table thead th")
    assert "Email" in headers.all_inner_texts()
    page.get_by_text("Columns", exact=True).click()
    chooser = page.locator("details.column-chooser")
    chooser.get_by_label("Email", exact=True).uncheck()
    chooser.get_by_label("Company").check()
    chooser.get_by_role("button", name="Apply").click()
    head = page.locator("table.client-table thead")
    expect(head).not_to_contain_text("Email")
    expect(head).to_contain_text("Company")
    assert not chooser.evaluate("el => el.open"), "the chooser should close after Apply"
    page.reload()
    expect(head).to_contain_text("Company")
    expect(head).not_to_contain_text("Email")
