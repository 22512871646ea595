"""Password resets: sent by an admin or asked for on "Forgot your password?"; the link
works once for one hour, and using it signs the user out everywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.security.models import LoginAttempt
from crm.sqltypes import utcnow
from crm.users.models import AccountToken
from crm.users.services import MAX_RESETS_PER_EMAIL
from tests.conftest import TEST_PASSWORD, login, make_user
from tests.users.helpers import (
    audit_entries,
    deliver_queued,
    link_in,
    require_stub_broker,
    user_state,
)

NEW_PASSWORD = "pierogi ruskie z cebulką"


@pytest.fixture(autouse=True)
def _stub_broker():  # type: ignore[no-untyped-def]
    require_stub_broker()


@pytest.fixture
def ola(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return make_user("ola@example.com", role="sales", name="Ola Wiśniewska").id


def test_admin_sent_reset_works_once_and_signs_out_everywhere(admin_client, app, ola):
    signed_in = app.test_client()
    login(signed_in, "ola@example.com")
    assert signed_in.get("/clients/").status_code == 200

    response = admin_client.post(f"/admin/users/{ola}/reset")
    assert response.status_code == 302
    (message,) = deliver_queued(app)
    assert message["To"] == "ola@example.com"
    assert "1 hour" in message.get_content()
    link = link_in(message)
    with app.app_context():
        token = db.session.scalar(select(AccountToken))
        assert token.purpose == "reset"
        assert timedelta(minutes=59) < token.expires_at - utcnow() <= timedelta(hours=1)

    browser = app.test_client()
    page = browser.get(link)
    assert page.status_code == 200 and "ola@example.com" in page.get_data(as_text=True)
    weak = browser.post(link, data={"password": "ola@example.com", "confirm": "ola@example.com"})
    assert weak.status_code == 422
    done = browser.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/login"

    # The session that was open elsewhere is gone.
    assert signed_in.get("/clients/").status_code == 302
    # Single use.
    assert browser.get(link).status_code == 410
    # The old password no longer works; the new one does.
    old = app.test_client().post(
        "/login", data={"email": "ola@example.com", "password": TEST_PASSWORD}
    )
    assert old.status_code == 200
    new = app.test_client().post(
        "/login", data={"email": "ola@example.com", "password": NEW_PASSWORD}
    )
    assert new.status_code == 302
    assert user_state(app, "ola@example.com").password_changed_at is not None
    assert [e.target_id for e in audit_entries(app, "password_reset_sent")] == [ola]
    [changed] = audit_entries(app, "password_changed")
    assert changed.actor_id == ola and changed.details == {"via": "reset"}


def test_an_expired_reset_link_is_refused(admin_client, app, ola):
    admin_client.post(f"/admin/users/{ola}/reset")
    link = link_in(deliver_queued(app)[0])
    with app.app_context():
        token = db.session.scalar(select(AccountToken))
        token.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    browser = app.test_client()
    page = browser.get(link)
    assert page.status_code == 410
    assert "expired" in page.get_data(as_text=True)
    assert "/password/forgot" in page.get_data(as_text=True)
    posted = browser.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert posted.status_code == 410
    assert user_state(app, "ola@example.com").password_changed_at is not None  # unchanged
    ok = app.test_client().post(
        "/login", data={"email": "ola@example.com", "password": TEST_PASSWORD}
    )
    assert ok.status_code == 302


def test_forgot_password_answers_the_same_for_known_and_unknown_emails(app, ola):
    browser = app.test_client()
    assert browser.get("/password/forgot").status_code == 200
    known = browser.post("/password/forgot", data={"email": "OLA@example.com"})
    unknown = browser.post("/password/forgot", data={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.get_data() == unknown.get_data()
    # Only the real account gets an email.
    [message] = deliver_queued(app)
    assert message["To"] == "ola@example.com"
    link = link_in(message)
    done = browser.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 302


def test_no_reset_email_for_a_deactivated_user(admin_client, app, ola):
    assert admin_client.post(f"/admin/users/{ola}/deactivate").status_code == 302
    deliver_queued(app)
    browser = app.test_client()
    response = browser.post("/password/forgot", data={"email": "ola@example.com"})
    assert response.status_code == 200
    assert deliver_queued(app) == []
    refused = admin_client.post(f"/admin/users/{ola}/reset", follow_redirects=True)
    assert "Reactivate the user" in refused.get_data(as_text=True)
    assert deliver_queued(app) == []


def test_forgot_password_is_throttled_without_locking_the_account(app, ola):
    browser = app.test_client()
    for _ in range(MAX_RESETS_PER_EMAIL):
        assert (
            browser.post("/password/forgot", data={"email": "ola@example.com"}).status_code == 200
        )
    throttled = browser.post("/password/forgot", data={"email": "ola@example.com"})
    assert throttled.status_code == 429
    # The same for an address without an account: the limit tells nothing either.
    for _ in range(MAX_RESETS_PER_EMAIL):
        browser.post("/password/forgot", data={"email": "ghost@example.com"})
    assert browser.post("/password/forgot", data={"email": "ghost@example.com"}).status_code == 429
    assert len(deliver_queued(app)) == MAX_RESETS_PER_EMAIL
    with app.app_context():
        kinds = db.session.scalars(select(LoginAttempt.kind).distinct()).all()
        assert kinds == ["reset"]
        failed = db.session.scalar(
            select(func.count(LoginAttempt.id)).where(LoginAttempt.success.is_(False))
        )
        assert failed == 0
    # Reset requests are not failed sign-ins: the account still signs in.
    login(app.test_client(), "ola@example.com")


def test_a_new_reset_link_replaces_the_previous_one(admin_client, app, ola):
    admin_client.post(f"/admin/users/{ola}/reset")
    first = link_in(deliver_queued(app)[0])
    admin_client.post(f"/admin/users/{ola}/reset")
    second = link_in(deliver_queued(app)[0])
    browser = app.test_client()
    assert browser.get(first).status_code == 404
    assert browser.get(second).status_code == 200
    assert browser.get("/password/reset/unknown-token").status_code == 404
