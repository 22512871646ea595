from __future__ import annotations

from crm.auth.models import User
from crm.auth.services import revoke_sessions
from crm.extensions import db
from tests.conftest import TEST_PASSWORD, login, make_user


def test_pages_need_a_login(client):
    response = client.get("/clients/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/clients/")


def test_htmx_request_without_login_gets_a_redirect_header_not_a_form(client):
    response = client.get("/clients/1/groups/email/edit", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")
    assert "<form" not in response.get_data(as_text=True)


def test_wrong_password_and_unknown_email_get_the_same_message(client, app):
    with app.app_context():
        make_user()
    wrong = client.post("/login", data={"email": "admin@example.com", "password": "nope-nope-nope"})
    unknown = client.post(
        "/login", data={"email": "ghost@example.com", "password": "nope-nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 200
    assert "Wrong email or password." in wrong.get_data(as_text=True)
    assert "Wrong email or password." in unknown.get_data(as_text=True)


def test_login_is_case_insensitive_and_follows_next_only_on_site(client, app):
    with app.app_context():
        make_user()
    response = client.post(
        "/login?next=/admin/fields/", data={"email": "ADMIN@Example.com", "password": TEST_PASSWORD}
    )
    assert response.headers["Location"] == "/admin/fields/"
    client.post("/logout")
    evil = client.post(
        "/login?next=https://evil.example/x",
        data={"email": "admin@example.com", "password": TEST_PASSWORD},
    )
    assert evil.headers["Location"] == "/"
    client.post("/logout")
    evil = client.post(
        "/login?next=//evil.example/x",
        data={"email": "admin@example.com", "password": TEST_PASSWORD},
    )
    assert evil.headers["Location"] == "/"


def test_deactivated_user_cannot_log_in_and_is_signed_out(client, app):
    with app.app_context():
        make_user()
    login(client, "admin@example.com")
    with app.app_context():
        user = db.session.scalar(db.select(User))
        user.active = False
        db.session.commit()
    assert client.get("/clients/").status_code == 302
    response = client.post("/login", data={"email": "admin@example.com", "password": TEST_PASSWORD})
    assert "Wrong email or password." in response.get_data(as_text=True)


def test_revoking_sessions_signs_the_user_out_everywhere(client, app):
    with app.app_context():
        make_user()
    login(client, "admin@example.com")
    assert client.get("/clients/").status_code == 200
    with app.app_context():
        revoke_sessions(db.session.scalar(db.select(User)))
        db.session.commit()
    assert client.get("/clients/").status_code == 302


def test_passwords_are_hashed_with_argon2(app):
    with app.app_context():
        user = make_user()
        assert user.password_hash.startswith("$argon2id$")
        assert TEST_PASSWORD not in user.password_hash


def test_logout_needs_post(admin_client):
    assert admin_client.get("/logout").status_code == 405
    assert admin_client.post("/logout").status_code == 302
    assert admin_client.get("/clients/").status_code == 302


def test_csrf_is_enforced_on_state_changing_requests(admin_client, app):
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        refused = admin_client.post("/clients/new", data={"last_name": "Bez tokenu"})
        assert refused.status_code == 400
        page = admin_client.get("/clients/new").get_data(as_text=True)
        token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        accepted = admin_client.post(
            "/clients/new", data={"last_name": "Z tokenem", "csrf_token": token}
        )
        assert accepted.status_code == 302
        # htmx sends the token in a header instead.
        header = admin_client.post(
            "/clients/columns", data={"columns": ["email"]}, headers={"X-CSRFToken": token}
        )
        assert header.status_code == 302
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
