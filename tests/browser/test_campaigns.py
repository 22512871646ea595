"""A newsletter from start to finish, as a person does it: lists of one group made on the
lists page, a client put on a list from the card, a saved filter (city = "Łódź") made
from the search box, a Markdown campaign to the list narrowed by that filter, sent with
the progress bar reaching 100 %, the message read from the outbox, and its unsubscribe
link used (without signing in) to switch to the group's other list; the card then
shows the change.

A Dramatiq worker thread runs for this test only, with the live server's app; the
other browser tests send nothing. Names carry a per-run tag (one shared database).
"""

from __future__ import annotations

import re
import uuid
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import (
    TIMEOUT_MS,
    VIEWPORT,
    LiveServer,
    PageProblems,
    on_live_server,
    outbox_messages,
    watch,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect

NOTICE = "Raz w tygodniu wysyłamy nowości salonu. Wypisać się można w każdej chwili."
# Sending a few messages takes a worker well under a second; the page polls every 2 s.
SEND_TIMEOUT_MS = 20_000


def seed(live_server: LiveServer, tag: str) -> tuple[str, dict[str, int], dict[str, str]]:
    """A consent purpose for the newsletter and four clients; returns the purpose's name,
    the clients' ids and their addresses, by key."""
    purpose_name = f"Newsletter {tag}"
    people = {
        "ludmila": ("Ludmiła", "Kołodziej", "Łódź"),
        "jurgen": ("Jürgen", "Müller", "München"),
        "zenon": ("Zenon", "Źdźbło", "Łódź"),
        "oskar": ("Oskar", "Gęś", "Łódź"),  # in Łódź but on no list
    }
    emails = {key: f"{key}.{tag}@example.pl" for key in people}

    def run() -> dict[str, int]:
        from crm.consents.models import LegalBasis
        from crm.consents.services import PurposeSpec, create_purpose
        from crm.extensions import db
        from tests.conftest import make_client

        create_purpose(
            PurposeSpec(
                name=purpose_name,
                legal_basis=LegalBasis.CONSENT,
                retention_months=24,
                channels=["email"],
                data_categories="name, email address",
            ),
            {"en": NOTICE},
            None,
        )
        db.session.commit()
        return {
            key: make_client(
                first_name=first, last_name=f"{last} {tag}", city=city, email=emails[key]
            ).id
            for key, (first, last, city) in people.items()
        }

    return purpose_name, live_server.run(run), emails


def subscribe(live_server: LiveServer, client_ids: list[int], list_name: str) -> None:
    def run() -> None:
        from crm.clients.models import Client
        from crm.extensions import db
        from crm.mailing import services

        mlist = services.find_list(list_name)
        assert mlist is not None
        for client_id in client_ids:
            client = db.session.get(Client, client_id)
            assert client is not None
            services.subscribe(client, mlist)
        db.session.commit()

    live_server.run(run)


def list_ids(live_server: LiveServer, *names: str) -> list[int]:
    def run() -> list[int]:
        from crm.mailing import services

        found = [services.find_list(name) for name in names]
        assert all(found), names
        return [m.id for m in found if m is not None]

    return live_server.run(run)


def add_list(page: Page, name: str, group: str, purpose: str) -> None:
    page.goto("/admin/lists/")
    page.get_by_role("button", name="Add list", exact=True).click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Public description").fill(f"{name}: nowości salonu w Łodzi.")
    page.get_by_label("Group").select_option(label=group)
    page.get_by_label("Opt-in").select_option(label="Single opt-in")
    page.get_by_label("Purpose").select_option(label=purpose)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#flash")).to_contain_text(f"List “{name}” added.")


def test_newsletter_to_a_saved_filter_then_switch_lists(
    logged_in: Page,
    live_server: LiveServer,
    browser: Browser,
    problems: PageProblems,
    worker: Path,
) -> None:
    page = logged_in
    tag = uuid.uuid4().hex[:6]
    purpose, clients, emails = seed(live_server, tag)
    group, weekly, monthly = f"Nowości {tag}", f"Tygodnik {tag}", f"Miesięcznik {tag}"
    filter_name = f"Klienci z Łodzi {tag}"
    subject = f"Zaproszenie {tag}: jesień w Łodzi, {{{{ first_name }}}}!"

    # 1. A group and its two lists, on the lists pages.
    page.goto("/admin/lists/")
    page.get_by_role("button", name="Add group").click()
    page.get_by_label("Name").fill(group)
    page.get_by_label("Description").fill("Ta sama treść, różna częstotliwość.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#flash")).to_contain_text(f"Group “{group}” added.")
    add_list(page, weekly, group, purpose)
    add_list(page, monthly, group, purpose)
    weekly_id, monthly_id = list_ids(live_server, weekly, monthly)

    # Ludmiła goes on the weekly list from her card; the others are seeded.
    page.goto(f"/clients/{clients['ludmila']}")
    section = page.locator("article#lists")
    expect(section).to_contain_text("Not on any mailing list.")
    section.get_by_label("List", exact=True).select_option(label=weekly)
    section.get_by_role("button", name="Subscribe", exact=True).click()
    expect(section.locator(".flash-success")).to_have_text(f"Subscribed to “{weekly}”.")
    expect(section.locator(f"#list-{weekly_id} .badge")).to_have_text("Subscribed")
    subscribe(live_server, [clients["jurgen"], clients["zenon"]], weekly)

    # 2. The saved filter, typed into the search box and saved.
    page.goto("/clients/")
    page.locator("#q").fill('city = "Łódź"')
    table = page.locator("table.client-table")
    expect(table).to_contain_text(f"Kołodziej {tag}")
    expect(table).not_to_contain_text(f"Müller {tag}")
    assert "q=" in page.url
    save = page.locator("#save-search")
    expect(save.locator('input[name="q"]')).to_have_value('city = "Łódź"')
    save.locator("summary").click()
    page.locator("#save-name").fill(filter_name)
    save.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#save-search .save-notice")).to_contain_text("Search saved")
    expect(page.locator("#saved-filters a.filter-name", has_text=filter_name)).to_be_visible()

    # 3. The campaign: the weekly list, narrowed by the saved filter.
    page.get_by_role("link", name="Campaigns").click()
    page.get_by_role("button", name="New campaign").click()
    page.get_by_label("Internal name").fill(f"Jesień {tag}")
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Sender name").fill("Salon Żółta Łódź")
    page.get_by_label("Sender address").fill("biuro@example.pl")
    page.get_by_label("Format").select_option(label="Markdown")
    page.get_by_label("Message").fill(
        "# Dzień dobry, {{ first_name }}!\n\n"
        "Zapraszamy na **jesienne** zabiegi w Łodzi.\n\n"
        "- masaż\n- pielęgnacja dłoni\n"
    )
    page.get_by_label("Lists").select_option(label=weekly)
    page.get_by_label("Only clients matching the saved filter").select_option(label=filter_name)
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("#flash")).to_contain_text("Campaign saved as a draft.")
    expect(page.locator("#status")).to_have_text("Draft")
    campaign_url = page.url

    # 4. Send: the confirmation page counts the recipients (Łódź and on the list).
    page.get_by_role("button", name="Send…").click()
    expect(page.locator("#recipient-count")).to_have_text(
        f"This campaign goes to 2 recipients on {weekly}."
    )
    page.get_by_role("button", name="Send now").click()
    page.wait_for_url(campaign_url)
    expect(page.locator("#flash")).to_contain_text("Sending to 2 recipients has started.")
    progress = page.locator("#progress")
    expect(progress).to_contain_text("2 of 2 recipients handled (100%)", timeout=SEND_TIMEOUT_MS)
    expect(page.locator("#status")).to_have_text("Sent", timeout=SEND_TIMEOUT_MS)
    expect(progress.locator("progress")).to_have_attribute("value", "2")
    expect(progress.locator("progress")).to_have_attribute("max", "2")
    expect(page.locator("#stat-sent")).to_have_text("2")
    expect(page.locator("#stat-skipped")).to_have_text("0")
    expect(page.locator("#stat-failed")).to_have_text("0")

    # Only the two clients in Łódź on the list got a message.
    messages = outbox_messages(worker, tag)
    to = sorted(address for m in messages for _name, address in getaddresses([str(m["To"])]))
    assert to == sorted([emails["ludmila"], emails["zenon"]])
    message = next(m for m in messages if emails["ludmila"] in str(m["To"]))
    assert str(message["Subject"]) == f"Zaproszenie {tag}: jesień w Łodzi, Ludmiła!"
    assert "Salon Żółta Łódź" in str(message["From"])
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "Dzień dobry, Ludmiła!" in text.get_content()
    assert "<strong>jesienne</strong>" in html.get_content()

    # 5. The one-click unsubscribe headers (RFC 8058), and the link they carry.
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    header = re.fullmatch(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]).strip())
    assert header, message["List-Unsubscribe"]
    link = header.group(1)
    assert "/lists/u/" in link
    assert link in text.get_content()  # the footer carries the same link

    # Opened from the mailbox: no session, no cookies.
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        visitor = watch(context.new_page(), problems)
        visitor.goto(on_live_server(link, live_server))
        card = visitor.locator("article.unsubscribe-page")
        expect(card.get_by_role("heading", level=1)).to_have_text(weekly)
        expect(card).to_contain_text("You receive this list.")
        expect(card).not_to_contain_text("Ludmiła")  # no client data on a public page
        other = card.locator("ul.switch-list > li", has_text=monthly)
        other.get_by_role("button", name="Switch to this list").click()
        expect(card.locator(".flash-success")).to_have_text(f"You now receive “{monthly}” instead.")
        expect(card).to_contain_text("You do not receive this list.")
        expect(other).to_contain_text("You receive this list.")
        expect(card.get_by_role("button", name="Subscribe again")).to_be_visible()
    finally:
        context.close()

    # The campaign counts the unsubscribe it brought.
    page.goto(campaign_url)
    expect(page.locator("#stat-unsubscribes")).to_have_text("1")

    # 6. Ludmiła's card: off the weekly list, on the monthly one; the message is listed.
    page.goto(f"/clients/{clients['ludmila']}")
    section = page.locator("article#lists")
    expect(section.locator(f"#list-{weekly_id}")).to_contain_text(weekly)
    expect(section.locator(f"#list-{weekly_id} .badge")).to_have_text("Unsubscribed")
    expect(section.locator(f"#list-{monthly_id}")).to_contain_text(monthly)
    expect(section.locator(f"#list-{monthly_id} .badge")).to_have_text("Subscribed")
    expect(section.locator("h2 .count")).to_have_text("1")
    expect(page.locator("article#emails")).to_contain_text(f"Zaproszenie {tag}")

    # Jürgen (on the list, not in Łódź) got nothing.
    page.goto(f"/clients/{clients['jurgen']}")
    expect(page.locator("article#emails")).to_contain_text("No emails sent yet.")
