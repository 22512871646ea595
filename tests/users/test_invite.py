"""Invitations: the admin invites, the email carries a single-use link, the invitee
chooses a password and is signed in; expired, used, replaced and unknown links get a
clear 4xx page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.auth.models import Role, Team
from crm.auth.services import find_user
from crm.extensions import db
from crm.sqltypes import utcnow
from crm.users.models import AccountToken
from crm.users.services import token_digest
from tests.users.helpers import (
    audit_entries,
    deliver_queued,
    link_in,
    require_stub_broker,
    user_state,
)

NEW_PASSWORD = "marchewka z groszkiem 7"


@pytest.fixture(autouse=True)
def _stub_broker():  # type: ignore[no-untyped-def]
    require_stub_broker()


def _role_id(app, name: str) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return db.session.scalar(select(Role.id).where(Role.name == name))


def invite(admin_client, app, email="jan@example.com", name="Jan Dvořák", role="sales", **extra):  # type: ignore[no-untyped-def]
    response = admin_client.post(
        "/admin/users/invite",
        data={"email": email, "full_name": name, "role_id": _role_id(app, role), **extra},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    (message,) = deliver_queued(app)
    return message


def test_invitation_end_to_end(admin_client, app):
    with app.app_context():
        team = Team(name="Łódź")
        db.session.add(team)
        db.session.commit()
        team_id = team.id
    message = invite(admin_client, app, email="Jan@Example.com", team_id=team_id)
    assert message["To"] == "jan@example.com"
    assert "invited" in message["Subject"]
    body = message.get_content()
    assert "Hello Jan Dvořák" in body and "7 days" in body
    link = link_in(message)
    assert f"{app.config['CRM_BASE_URL']}{link}" in body

    pending = user_state(app, "jan@example.com")
    assert pending.active and pending.team_id == team_id and pending.password_changed_at is None
    # Until the link is used nobody can sign in as the new user, whatever they type.
    other = app.test_client()
    refused = other.post("/login", data={"email": "jan@example.com", "password": "!"})
    assert refused.status_code == 200 and "Wrong email or password" in refused.get_data(True)

    listing = admin_client.get("/admin/users/").get_data(as_text=True)
    assert "Jan Dvořák" in listing and "invited" in listing

    page = other.get(link)
    assert page.status_code == 200
    assert "jan@example.com" in page.get_data(as_text=True)
    differ = other.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"})
    assert differ.status_code == 422 and "The two passwords differ." in differ.get_data(True)
    weak = other.post(link, data={"password": "password1234", "confirm": "password1234"})
    assert weak.status_code == 422 and "too common" in weak.get_data(as_text=True)

    done = other.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/"
    assert other.get("/clients/").status_code == 200  # signed in as the new user
    assert other.get("/admin/users/").status_code == 403  # ... with the sales role

    # The link works once.
    again = app.test_client().get(link)
    assert again.status_code == 410 and "used already" in again.get_data(as_text=True)
    accepted = user_state(app, "jan@example.com")
    assert accepted.password_changed_at is not None and accepted.last_login_at is not None
    third = app.test_client()
    signed_in = third.post("/login", data={"email": "jan@example.com", "password": NEW_PASSWORD})
    assert signed_in.status_code == 302

    [invited] = audit_entries(app, "user_invited")
    assert invited.details["email"] == "jan@example.com"
    assert invited.details["role"] == "sales" and invited.details["team"] == "Łódź"
    assert audit_entries(app, "invite_accepted")[0].actor_id == accepted.id


def test_expired_unknown_and_replaced_links_are_refused(admin_client, app):
    first = link_in(invite(admin_client, app))
    client = app.test_client()
    user_id = user_state(app, "jan@example.com").id
    with app.app_context():
        token = db.session.scalar(select(AccountToken).where(AccountToken.user_id == user_id))
        token.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    expired = client.get(first)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    assert (
        client.post(first, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}).status_code
        == 410
    )

    # Sending the invitation again replaces the link.
    resend = admin_client.post(f"/admin/users/{user_id}/invite")
    assert resend.status_code == 302
    (message,) = deliver_queued(app)
    second = link_in(message)
    assert second != first
    assert client.get(first).status_code == 404
    assert client.get(second).status_code == 200
    assert client.get("/invite/not-a-token").status_code == 404
    assert client.get("/invite/" + "x" * 500).status_code == 404
    with app.app_context():
        # Only a hash of the token is stored.
        raw = second.rsplit("/", 1)[1]
        stored = db.session.scalars(select(AccountToken.token_hash)).all()
        assert stored == [token_digest(raw)] and raw not in stored
        [row] = db.session.scalars(select(AccountToken)).all()
        assert timedelta(days=6, hours=23) < row.expires_at - utcnow() <= timedelta(days=7)
    assert [e.details.get("resent") for e in audit_entries(app, "user_invited")] == [None, True]


def test_a_role_that_requires_2fa_goes_through_the_sign_in_page(admin_client, app):
    with app.app_context():
        db.session.scalar(select(Role).where(Role.name == "manager")).require_2fa = True
        db.session.commit()
    link = link_in(invite(admin_client, app, role="manager"))
    client = app.test_client()
    done = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    assert client.get("/clients/").status_code == 302  # not signed in yet


def test_inviting_an_existing_email_or_a_bad_one_is_refused(admin_client, app, admin):
    for email, message in [
        ("ADMIN@example.com", "exists already"),
        ("not an email", "valid email"),
    ]:
        response = admin_client.post(
            "/admin/users/invite",
            data={"email": email, "full_name": "X", "role_id": _role_id(app, "sales")},
        )
        assert response.status_code == 422
        assert message in response.get_data(as_text=True)
        assert email in response.get_data(as_text=True)  # what was typed stays
    assert deliver_queued(app) == []


def test_a_deactivated_invitee_cannot_use_the_link(admin_client, app):
    link = link_in(invite(admin_client, app))
    client = app.test_client()
    user_id = user_state(app, "jan@example.com").id
    assert admin_client.post(f"/admin/users/{user_id}/deactivate").status_code == 302
    # Deactivation removed the link; even a kept token would refuse an inactive user.
    assert client.get(link).status_code in (403, 404)


def test_html_in_names_is_escaped_and_diacritics_round_trip(admin_client, app):
    payload = '<script>alert("x")</script> Müller'
    invite(admin_client, app, email="m@example.com", name=payload)
    invite(admin_client, app, email="l@example.com", name="Łucja Dvořák-Łódź")
    with app.app_context():
        assert find_user("m@example.com").full_name == payload
        assert find_user("l@example.com").full_name == "Łucja Dvořák-Łódź"
        user_id = find_user("m@example.com").id
    for path in ["/admin/users/", f"/admin/users/{user_id}"]:
        html = admin_client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Müller" in html
    assert "Łucja Dvořák-Łódź" in admin_client.get("/admin/users/").get_data(as_text=True)


def test_email_links_use_the_base_url_or_else_the_request_host(app, monkeypatch):
    from crm.web.urls import external_url

    monkeypatch.setitem(app.config, "CRM_BASE_URL", "https://crm.firma.pl/")
    with app.test_request_context("/", base_url="http://10.0.0.5:8000"):
        link = external_url("users.accept_invite", token="abc")
    assert link == "https://crm.firma.pl/invite/abc"
    monkeypatch.setitem(app.config, "CRM_BASE_URL", "")
    with app.test_request_context("/", base_url="https://crm.example.org"):
        link = external_url("users.reset_password", token="abc")
    assert link == "https://crm.example.org/password/reset/abc"
