"""The server-side idle timeout locks the session; the password resumes the same page."""

from __future__ import annotations

import time

from tests.conftest import TEST_PASSWORD


def _go_idle(http, app) -> None:  # type: ignore[no-untyped-def]
    timeout = app.config["CRM_IDLE_TIMEOUT_SECONDS"]
    with http.session_transaction() as session:
        session["last_seen"] = int(time.time()) - timeout - 5


def test_activity_within_the_timeout_keeps_the_session(admin_client, app):
    assert admin_client.get("/clients/").status_code == 200
    with admin_client.session_transaction() as session:
        assert int(time.time()) - session["last_seen"] < 5
    assert admin_client.get("/admin/fields/").status_code == 200


def test_idle_session_is_locked_and_resumes_the_same_page(admin_client, app):
    _go_idle(admin_client, app)
    locked = admin_client.get("/admin/fields/?x=1")
    assert locked.status_code == 302
    assert locked.headers["Location"].startswith("/lock?next=/admin/fields/")
    # Still locked for every other page until the password is given.
    assert admin_client.get("/clients/").headers["Location"].startswith("/lock")
    page = admin_client.get(locked.headers["Location"]).get_data(as_text=True)
    assert "Locked" in page and "admin@example.com" in page
    wrong = admin_client.post("/lock", data={"password": "not it", "next": "/admin/fields/?x=1"})
    assert wrong.status_code == 200 and "Wrong password." in wrong.get_data(as_text=True)
    assert admin_client.get("/clients/").status_code == 302
    right = admin_client.post(
        "/lock", data={"password": TEST_PASSWORD, "next": "/admin/fields/?x=1"}
    )
    assert right.headers["Location"] == "/admin/fields/?x=1"
    assert admin_client.get("/clients/").status_code == 200


def test_htmx_request_in_an_idle_session_redirects_the_page(admin_client, app):
    _go_idle(admin_client, app)
    response = admin_client.get(
        "/clients/?q=x",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/clients/7"},
    )
    assert response.headers["HX-Redirect"] == "/lock?next=/clients/7"
    assert "<table" not in response.get_data(as_text=True)


def test_too_many_wrong_passwords_sign_out(admin_client, app):
    _go_idle(admin_client, app)
    admin_client.get("/clients/")
    for _ in range(5):
        last = admin_client.post("/lock", data={"password": "wrong wrong"})
    assert last.headers["Location"] == "/login"
    assert admin_client.get("/clients/").headers["Location"].startswith("/login")


def test_unlocked_session_visiting_the_lock_page_goes_back(admin_client):
    response = admin_client.get("/lock?next=/admin/fields/")
    assert response.headers["Location"] == "/admin/fields/"


def test_lock_page_needs_a_login(client):
    assert client.get("/lock").headers["Location"].startswith("/login")


def test_lock_and_unlock_are_audited(admin_client, app):
    from sqlalchemy import select

    from crm.audit.models import AuditEntry
    from crm.extensions import db

    _go_idle(admin_client, app)
    admin_client.get("/clients/")
    admin_client.post("/lock", data={"password": "nope nope"})
    admin_client.post("/lock", data={"password": TEST_PASSWORD})
    with app.app_context():
        actions = list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions[-2:] == ["unlock_failed", "unlock"]


def test_pages_carry_the_idle_timer(admin_client, app):
    body = admin_client.get("/clients/").get_data(as_text=True)
    assert f'data-idle-seconds="{app.config["CRM_IDLE_TIMEOUT_SECONDS"]}"' in body
