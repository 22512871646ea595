"""The organisation settings page's public-pages and appointments part, and the
generated privacy notice at /privacy that short information clauses link to."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.consents.models import ConsentPurpose, LegalBasis
from crm.extensions import db
from crm.org.models import Organisation

FORM = {
    "name": "Salon Łódź",
    "legal_name": "Salon Łódź sp. z o.o.",
    "address": "ul. Piotrkowska 1\n90-001 Łódź",
    "privacy_contact": "rodo@example.com",
    "default_phone_region": "PL",
    "timezone": "Europe/Warsaw",
    "default_currency": "PLN",
    "default_locale": "pl",
    "privacy_notice_url": "",
    "reminders_basis": "f",
    "calendar_feed_detail": "booked",
}


def _reminders_basis(app: Flask) -> str:
    with app.app_context():
        return db.session.scalar(
            select(ConsentPurpose.legal_basis).where(ConsentPurpose.key == "reminders")
        )


def test_settings_show_the_new_fields_with_current_values(admin_client: FlaskClient) -> None:
    page = admin_client.get("/admin/organisation/").get_data(as_text=True)
    assert "Privacy notice link" in page
    assert "Legal basis of appointment reminders" in page
    assert "Staff calendar feeds show" in page
    assert 'href="/privacy"' in page


def test_reminders_basis_is_carried_by_the_purpose(app: Flask, admin_client: FlaskClient) -> None:
    response = admin_client.post("/admin/organisation/", data=FORM | {"reminders_basis": "b"})
    assert response.status_code == 302
    assert _reminders_basis(app) == LegalBasis.CONTRACT.value
    page = admin_client.get("/admin/organisation/").get_data(as_text=True)
    assert '<option selected value="b">' in page or 'value="b" selected' in page
    admin_client.post("/admin/organisation/", data=FORM | {"reminders_basis": "a"})
    assert _reminders_basis(app) == LegalBasis.CONSENT.value


def test_only_the_three_bases_are_offered(app: Flask, admin_client: FlaskClient) -> None:
    response = admin_client.post("/admin/organisation/", data=FORM | {"reminders_basis": "c"})
    assert response.status_code == 200
    assert "Not a valid choice" in response.get_data(as_text=True)
    assert _reminders_basis(app) != LegalBasis.LEGAL_OBLIGATION.value


def test_feed_detail_and_notice_link_are_saved(app: Flask, admin_client: FlaskClient) -> None:
    data = FORM | {
        "calendar_feed_detail": "first_name",
        "privacy_notice_url": "https://salon.example.pl/polityka-prywatnosci",
    }
    assert admin_client.post("/admin/organisation/", data=data).status_code == 302
    with app.app_context():
        org = db.session.get(Organisation, 1)
        assert org.calendar_feed_detail == "first_name"
        assert org.privacy_notice_url == "https://salon.example.pl/polityka-prywatnosci"


def test_a_bad_notice_link_is_refused_next_to_the_field(
    app: Flask, admin_client: FlaskClient
) -> None:
    response = admin_client.post(
        "/admin/organisation/", data=FORM | {"privacy_notice_url": "not a link"}
    )
    assert response.status_code == 200
    assert "Invalid URL" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Organisation, 1).privacy_notice_url == ""


def test_privacy_notice_is_public_and_names_controller_and_purposes(
    app: Flask, admin_client: FlaskClient
) -> None:
    admin_client.post("/admin/organisation/", data=FORM)
    anonymous = app.test_client()
    page = anonymous.get("/privacy")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Salon Łódź sp. z o.o." in text
    assert "rodo@example.com" in text
    assert "Appointment reminders" in text  # the purpose the settings page made
    assert "Legitimate interest" in text
    assert "supervisory authority" in text
