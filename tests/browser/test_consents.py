"""Done when 6: on a card, record a consent given by phone, see it in the history,
withdraw it (confirming the dialog) and see the state change, all through htmx."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import LiveServer, htmx_settled

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect

NOTICE = "Once a month we phone you about new treatments. Say stop any time."


def _seed(live_server: LiveServer, purpose_name: str) -> tuple[int, int]:
    def seed() -> tuple[int, int]:
        from crm.clients.models import Client
        from crm.consents.models import LegalBasis
        from crm.consents.services import PurposeSpec, create_purpose
        from crm.extensions import db

        purpose = create_purpose(
            PurposeSpec(
                name=purpose_name,
                legal_basis=LegalBasis.CONSENT,
                retention_months=12,
                channels=["phone"],
                data_categories="name, phone number",
            ),
            {"en": NOTICE},
            None,
        )
        client = Client(first_name="Bożena", last_name=f"Zgoda {purpose_name[-6:]}", custom={})
        client.refresh_search_text()
        db.session.add(client)
        db.session.commit()
        return client.id, purpose.id

    return live_server.run(seed)


def _may_call(live_server: LiveServer, client_id: int, purpose_id: int) -> bool:
    def check() -> bool:
        from crm.consents.policy import may_contact

        return may_contact(client_id, purpose_id, "phone")

    return live_server.run(check)


def test_record_consent_by_phone_then_withdraw_it(logged_in: Page, live_server: LiveServer):
    page = logged_in
    purpose_name = f"Phone offers {uuid.uuid4().hex[:6]}"
    client_id, purpose_id = _seed(live_server, purpose_name)
    page.goto(f"/clients/{client_id}")
    section = page.locator("article#consents")
    row = section.locator(f"#consent-purpose-{purpose_id}")
    expect(row).to_contain_text("No record")

    # Open the form, pick the purpose and the method; the notice text is shown.
    section.get_by_role("button", name="+ Record consent").click()
    form = section.locator("form.consent-form")
    form.wait_for()
    # The purpose select reloads the form on "change": htmx must have set the swapped-in
    # form up first, or a change made in that instant (a loaded machine) goes unheard.
    htmx_settled(page)
    form.get_by_label("Purpose").select_option(label=purpose_name)
    expect(form.locator("blockquote.notice-text")).to_have_text(NOTICE)
    form.get_by_label("How").select_option(label="By phone")
    form.get_by_label("Note").fill("called +48 601 234 567")
    form.get_by_role("button", name="Save").click()

    expect(section.locator(".flash-success")).to_have_text(f"Given: {purpose_name}.")
    expect(row.locator(".consent-badge")).to_have_text("Given")
    newest = section.locator("ul.consent-timeline > li").first
    expect(newest).to_contain_text("Given")
    expect(newest).to_contain_text(purpose_name)
    expect(newest).to_contain_text("By phone")
    newest.locator("summary").click()
    expect(newest).to_contain_text("called +48 601 234 567")
    assert _may_call(live_server, client_id, purpose_id)

    # Withdraw, confirming the browser's dialog.
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    row.get_by_role("button", name="Withdraw").click()
    expect(row.locator(".consent-badge")).to_have_text("Withdrawn")
    assert asked and re.search(r"Withdraw the consent for .*It stops counting at once", asked[0])
    expect(section.locator(".flash-success")).to_have_text(f"Consent withdrawn: {purpose_name}.")
    expect(section.locator("ul.consent-timeline > li").first).to_contain_text("Withdrawn")
    expect(section.locator("#consents-count")).to_have_text("0")
    assert not _may_call(live_server, client_id, purpose_id)

    # A reload shows the same: nothing lived only in the page.
    page.reload()
    expect(page.locator(f"#consent-purpose-{purpose_id} .consent-badge")).to_have_text("Withdrawn")
