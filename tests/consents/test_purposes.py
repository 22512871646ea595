"""The purposes register: admin pages, notice versions (done when 3), the Art. 30
record as a page and an xlsx file."""

from __future__ import annotations

import io

from openpyxl import load_workbook
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.consents import services
from crm.consents.models import ConsentNotice, ConsentPurpose
from crm.extensions import db
from tests.conftest import login, make_client, make_user
from tests.consents.factories import T0, days, give, make_purpose

FORM = {
    "name": "Newsletter",
    "key": "",
    "description": "Monthly news and offers.",
    "legal_basis": "a",
    "legitimate_interest": "",
    "data_categories": "name, email address",
    "recipients": "Mail service (processor)",
    "channels": ["email"],
    "retention_months": "12",
    "retention_action": "review",
    "validity_months": "24",
    "warning_days": "30",
    "notice_en": "Version one of the notice.",
    "notice_pl": "",
    "notice_de": "",
    "notice_cs": "",
}


def test_add_a_purpose_through_the_form(admin_client, app):
    page = admin_client.get("/admin/purposes/")
    assert page.status_code == 200 and "No purposes yet" in page.get_data(as_text=True)
    assert admin_client.get("/admin/purposes/new").status_code == 200
    response = admin_client.post("/admin/purposes/new", data=FORM)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        purpose = db.session.scalar(select(ConsentPurpose))
        assert purpose.key == "newsletter" and purpose.validity_months == 24
        assert purpose.channels == ["email"]
        [notice] = db.session.scalars(select(ConsentNotice)).all()
        assert (notice.language, notice.version) == ("en", 1)
        assert notice.content_hash == services.content_hash("Version one of the notice.")
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "purpose.create"))
        assert entry.details["notices"][0]["version"] == 1
    listing = admin_client.get("/admin/purposes/").get_data(as_text=True)
    assert "Newsletter" in listing and "en v1" in listing


def test_the_form_refuses_bad_input_next_to_the_field(admin_client):
    data = dict(FORM, retention_months="", legal_basis="f", validity_months="", notice_en="")
    response = admin_client.post("/admin/purposes/new", data=data)
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "there is no “forever”" in text
    assert "Name the legitimate interest pursued." in text
    assert 'value="Newsletter"' in text  # what was typed stays
    no_notice = admin_client.post("/admin/purposes/new", data=dict(FORM, notice_en=" "))
    assert "Write the notice text in at least one language." in no_notice.get_data(as_text=True)
    consent = admin_client.post("/admin/purposes/new", data=dict(FORM, validity_months=""))
    assert "Consent needs a validity period." in consent.get_data(as_text=True)
    junk = admin_client.post("/admin/purposes/new", data=dict(FORM, retention_months="dużo"))
    assert junk.status_code == 200


def test_editing_a_notice_makes_a_new_version_and_old_events_keep_theirs(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        purpose = make_purpose(notices={"en": "Old text: monthly newsletter."})
        purpose_id = purpose.id
        old = give(client_id, purpose, now=T0)
        old_notice_id = old.notice_id
    edit = admin_client.get(f"/admin/purposes/{purpose_id}").get_data(as_text=True)
    assert "Old text: monthly newsletter." in edit
    data = dict(FORM, notice_en="New text: weekly newsletter.", notice_pl="Nowy tekst.")
    response = admin_client.post(f"/admin/purposes/{purpose_id}", data=data)
    assert response.status_code == 302
    with app.app_context():
        versions = services.notice_versions(purpose_id)
        assert [(n.language, n.version) for n in versions] == [("en", 2), ("en", 1), ("pl", 1)]
        latest = services.latest_notices(purpose_id)
        assert latest["en"].text == "New text: weekly newsletter."
        # Saving the same text again makes no version.
    admin_client.post(f"/admin/purposes/{purpose_id}", data=data)
    with app.app_context():
        assert len(services.notice_versions(purpose_id)) == 3
        updates = db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "purpose.update")
        ).all()
        assert len(updates) == 1  # the second save changed nothing
        assert {(n["language"], n["version"]) for n in updates[0].details["notices"]} == {
            ("en", 2),
            ("pl", 1),
        }
        purpose = db.session.get(ConsentPurpose, purpose_id)
        new = give(client_id, purpose, now=T0 + days(1))
        assert new.notice_id != old_notice_id
        assert db.session.get(services.ConsentEvent, old.id).notice_id == old_notice_id

    # The card shows each event's version, and the text it was given under.
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "notice en v2" in card and "notice en v1" in card
    shown = admin_client.get(
        f"/clients/{client_id}/consents/notice?id={old_notice_id}",
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)
    assert "Old text: monthly newsletter." in shown and "weekly" not in shown
    history = admin_client.get(f"/admin/purposes/notices/{old_notice_id}").get_data(as_text=True)
    assert "Old text: monthly newsletter." in history


def test_archive_and_restore(admin_client, app):
    with app.app_context():
        purpose_id = make_purpose().id
    admin_client.post(f"/admin/purposes/{purpose_id}/archive")
    with app.app_context():
        assert db.session.get(ConsentPurpose, purpose_id).is_archived
    assert "archived" in admin_client.get("/admin/purposes/").get_data(as_text=True)
    admin_client.post(f"/admin/purposes/{purpose_id}/restore")
    with app.app_context():
        assert not db.session.get(ConsentPurpose, purpose_id).is_archived


def test_only_settings_managers_reach_the_register(client, app):
    with app.app_context():
        make_user("kierownik@example.com", role="manager")
    login(client, "kierownik@example.com")
    for path in (
        "/admin/purposes/",
        "/admin/purposes/new",
        "/admin/purposes/register",
        "/admin/purposes/register.xlsx",
    ):
        assert client.get(path).status_code == 403, path


def test_the_art_30_record_prints_and_downloads(admin_client, app):
    with app.app_context():
        make_purpose('=HYPERLINK("http://evil")', description="+1 offers", recipients="@mail")
        make_purpose(
            "Invoicing",
            basis=services.LegalBasis.LEGAL_OBLIGATION,
            retention_months=60,
            data_categories="name, address, tax number",
        )
        archived = make_purpose("Old campaign")
        services.archive_purpose(archived, None)
        db.session.commit()
    page = admin_client.get("/admin/purposes/register").get_data(as_text=True)
    assert "Record of processing activities" in page
    assert "Invoicing" in page and "Legal obligation — Art. 6(1)(c)" in page
    assert "Old campaign" not in page

    response = admin_client.get("/admin/purposes/register.xlsx")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    sheet = load_workbook(io.BytesIO(response.data)).active
    cells = [c for row in sheet.iter_rows() for c in row if c.value is not None]
    values = [c.value for c in cells]
    assert "Invoicing" in values and "Old campaign" not in values
    for text in ('=HYPERLINK("http://evil")', "+1 offers", "@mail"):
        [cell] = [c for c in cells if c.value == text]
        assert cell.data_type == "s", text  # a string, never a formula
