"""/account: the signed-in user's own password change keeps this session and signs out
every other one; a wrong current password counts as a failed sign-in."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.extensions import db
from crm.security.models import LoginAttempt
from tests.conftest import TEST_PASSWORD, login, make_user
from tests.users.helpers import audit_entries, user_state

NEW_PASSWORD = "zupa ogórkowa z koperkiem"


def test_change_password_keeps_this_session_and_ends_the_others(app, client):
    with app.app_context():
        make_user("ola@example.com", role="sales", name="Ola Müller")
    login(client, "ola@example.com")
    elsewhere = app.test_client()
    login(elsewhere, "ola@example.com")
    page = client.get("/account").get_data(as_text=True)
    assert "Ola Müller" in page and "ola@example.com" in page

    wrong = client.post(
        "/account",
        data={"current_password": "nope", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert wrong.status_code == 422 and "current password is wrong" in wrong.get_data(True)
    with app.app_context():
        failures = select(func.count(LoginAttempt.id)).where(LoginAttempt.success.is_(False))
        assert db.session.scalar(failures) == 1
    differ = client.post(
        "/account",
        data={"current_password": TEST_PASSWORD, "password": NEW_PASSWORD, "confirm": "x"},
    )
    assert differ.status_code == 422 and "differ" in differ.get_data(as_text=True)
    weak = client.post(
        "/account",
        data={"current_password": TEST_PASSWORD, "password": "Ola Müller", "confirm": "Ola Müller"},
    )
    assert weak.status_code == 422

    before = user_state(app, "ola@example.com").password_changed_at
    done = client.post(
        "/account",
        data={"current_password": TEST_PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert done.status_code == 302
    assert client.get("/clients/").status_code == 200  # still signed in here
    assert elsewhere.get("/clients/").status_code == 302  # signed out there
    assert user_state(app, "ola@example.com").password_changed_at > before
    assert (
        app.test_client()
        .post("/login", data={"email": "ola@example.com", "password": NEW_PASSWORD})
        .status_code
        == 302
    )
    assert len(audit_entries(app, "password_changed")) == 1


def test_the_topbar_links_to_my_account(admin_client):
    html = admin_client.get("/clients/").get_data(as_text=True)
    assert 'href="/account"' in html
    assert 'href="/admin/users/"' in html and 'href="/admin/roles/"' in html


def test_the_login_page_offers_forgot_password(client):
    assert 'href="/password/forgot"' in client.get("/login").get_data(as_text=True)
