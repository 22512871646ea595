"""The signed-in user's own 2FA pages, an administrator's reset and the CLI reset."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from crm.auth import twofactor
from crm.auth.models import RecoveryCode
from crm.auth.services import find_user
from crm.extensions import db
from tests.auth.test_twofactor import (
    SECRET,
    T0,
    Clock,
    actions,
    code_step,
    enable_2fa,
    entries,
    oath,
    password_step,
    recovery_codes_for,
    require_2fa,
    user_state,
)
from tests.conftest import TEST_PASSWORD, login, make_user

STEP0 = T0 // 30
WRONG_CODE = "Wrong or expired code."


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(T0)
    monkeypatch.setattr(twofactor, "clock", fixed)
    return fixed


def _secret_on(page: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*data-secret="([A-Z2-7]+)"', page)
    assert match, page
    return match.group(1)


def _codes_on(page: str) -> list[str]:
    return re.findall(r"<li><code>([2-9a-z]{4}-[2-9a-z]{4})</code></li>", page)


def _signed_in_elsewhere(app, email: str, code: str | None = None):  # type: ignore[no-untyped-def]
    other = app.test_client()
    login(other, email)
    if code is not None:
        assert code_step(other, code).status_code == 302
    assert other.get("/clients/").status_code == 200
    return other


# --- the account page and enrolment -------------------------------------------------------


def test_the_nav_links_the_security_page_which_shows_the_status(admin_client):
    page = admin_client.get("/clients/").get_data(as_text=True)
    assert 'href="/account/2fa"' in page
    status = admin_client.get("/account/2fa").get_data(as_text=True)
    assert "Off" in status and 'href="/account/2fa/setup"' in status


def test_enrolment_refuses_a_wrong_code_and_a_right_one_turns_2fa_on(admin_client, app, clock):
    other = _signed_in_elsewhere(app, "admin@example.com")
    page = admin_client.get("/account/2fa/setup").get_data(as_text=True)
    assert 'id="totp-secret"' in page and '<label for="code"' in page
    assert 'src="data:image/svg+xml' in page
    secret = _secret_on(page)
    wrong_code = "000000" if oath(secret, T0) != "000000" else "111111"
    wrong = admin_client.post("/account/2fa/setup", data={"code": wrong_code})
    assert "does not match" in wrong.get_data(as_text=True)
    assert user_state(app, "admin@example.com").totp_enabled_at is None
    # The code of a step long gone does not confirm it either.
    stale = admin_client.post("/account/2fa/setup", data={"code": oath(secret, T0 - 90)})
    assert "does not match" in stale.get_data(as_text=True)
    done = admin_client.post("/account/2fa/setup", data={"code": oath(secret, T0)})
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and "Two-factor authentication is on" in body
    codes = _codes_on(body)
    assert len(set(codes)) == 10
    state = user_state(app, "admin@example.com")
    assert state.totp_secret == secret and state.totp_enabled_at is not None
    assert state.totp_last_step == STEP0
    [entry] = entries(app, "2fa_enabled")
    assert entry.target_id == state.id and entry.details == {"at_sign_in": False}
    # This session stays signed in; the other one was signed out by the change.
    assert admin_client.get("/clients/").status_code == 200
    assert other.get("/clients/").status_code == 302
    # The codes were shown once: the status page only counts them.
    status = admin_client.get("/account/2fa").get_data(as_text=True)
    assert "10 of 10" in status and codes[0] not in status
    # The next sign-in needs a code (the one used to enrol is spent).
    admin_client.post("/logout")
    password_step(admin_client, "admin@example.com")
    assert WRONG_CODE in code_step(admin_client, oath(secret, T0)).get_data(as_text=True)
    clock.advance(30)
    assert code_step(admin_client, oath(secret, clock.now)).status_code == 302


def test_a_setup_started_in_another_session_starts_over(admin_client, app, clock):
    first = _secret_on(admin_client.get("/account/2fa/setup").get_data(as_text=True))
    other = _signed_in_elsewhere(app, "admin@example.com")
    second = _secret_on(other.get("/account/2fa/setup").get_data(as_text=True))
    assert second != first
    response = admin_client.post("/account/2fa/setup", data={"code": oath(first, T0)})
    body = response.get_data(as_text=True)
    assert "The set-up was started again" in body
    assert user_state(app, "admin@example.com").totp_enabled_at is None
    assert (
        admin_client.post(
            "/account/2fa/setup", data={"code": oath(_secret_on(body), T0)}
        ).status_code
        == 200
    )
    assert user_state(app, "admin@example.com").totp_enabled_at is not None


def test_setup_when_2fa_is_on_goes_back_to_the_status_page(admin_client, app):
    enable_2fa(app, "admin@example.com")
    response = admin_client.get("/account/2fa/setup")
    assert response.headers["Location"] == "/account/2fa"
    assert user_state(app, "admin@example.com").totp_secret == SECRET


# --- recovery codes ----------------------------------------------------------------------------


def test_new_recovery_codes_need_a_current_code_and_replace_the_old_ones(admin_client, app, clock):
    enable_2fa(app, "admin@example.com")
    old = recovery_codes_for(app, "admin@example.com")
    page = admin_client.get("/account/2fa/recovery-codes").get_data(as_text=True)
    assert "stop working" in page
    refused = admin_client.post("/account/2fa/recovery-codes", data={"code": "123-456"})
    assert WRONG_CODE in refused.get_data(as_text=True)
    assert "2fa_recovery_codes_renewed" not in actions(app)
    done = admin_client.post("/account/2fa/recovery-codes", data={"code": oath(SECRET, T0)})
    new = _codes_on(done.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    assert "2fa_recovery_codes_renewed" in actions(app)
    admin_client.post("/logout")
    password_step(admin_client, "admin@example.com")
    assert WRONG_CODE in code_step(admin_client, old[0]).get_data(as_text=True)
    assert code_step(admin_client, new[0]).status_code == 302


# --- turning it off -----------------------------------------------------------------------------


def test_disabling_needs_the_password_and_a_code_and_signs_out_other_sessions(
    admin_client, app, clock
):
    enable_2fa(app, "admin@example.com")
    recovery_codes_for(app, "admin@example.com")
    # Signed in with the previous step's code, so the current one is still unused.
    other = _signed_in_elsewhere(app, "admin@example.com", code=oath(SECRET, T0 - 30))
    page = admin_client.get("/account/2fa/disable").get_data(as_text=True)
    assert 'name="password"' in page and 'name="code"' in page
    code = oath(SECRET, T0)
    wrong_password = admin_client.post(
        "/account/2fa/disable", data={"password": "not my password", "code": code}
    )
    assert "Wrong password." in wrong_password.get_data(as_text=True)
    assert user_state(app, "admin@example.com").totp_enabled_at is not None
    wrong_code = admin_client.post(
        "/account/2fa/disable", data={"password": TEST_PASSWORD, "code": "000-000"}
    )
    assert WRONG_CODE in wrong_code.get_data(as_text=True)
    done = admin_client.post("/account/2fa/disable", data={"password": TEST_PASSWORD, "code": code})
    assert done.headers["Location"] == "/account/2fa"
    state = user_state(app, "admin@example.com")
    assert state.totp_secret is None and state.totp_enabled_at is None
    assert state.totp_last_step is None
    with app.app_context():
        assert db.session.scalar(select(func.count(RecoveryCode.id))) == 0
    assert "2fa_disabled" in actions(app)
    assert admin_client.get("/clients/").status_code == 200
    assert other.get("/clients/").status_code == 302
    # Password alone again.
    admin_client.post("/logout")
    assert password_step(admin_client, "admin@example.com").headers["Location"] == "/"


def test_disabling_is_refused_when_the_role_requires_2fa(admin_client, app, clock):
    enable_2fa(app, "admin@example.com")
    require_2fa(app, "admin")
    status = admin_client.get("/account/2fa").get_data(as_text=True)
    assert "cannot turn it off" in status and 'href="/account/2fa/disable"' not in status
    page = admin_client.get("/account/2fa/disable").get_data(as_text=True)
    assert "Your role requires two-factor authentication" in page and 'name="code"' not in page
    refused = admin_client.post(
        "/account/2fa/disable", data={"password": TEST_PASSWORD, "code": oath(SECRET, T0)}
    )
    assert refused.status_code == 403
    assert user_state(app, "admin@example.com").totp_enabled_at is not None
    assert "2fa_disabled" not in actions(app)


# --- an administrator resets someone's 2FA -------------------------------------------------------


def _target_with_2fa(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        user = make_user("handlowiec@example.com", role="sales", name="Henryk")
        user_id = user.id
    enable_2fa(app, "handlowiec@example.com", last_step=STEP0)
    recovery_codes_for(app, "handlowiec@example.com")
    return user_id


def test_admin_reset_without_own_2fa_needs_the_admin_password(admin_client, app, clock):
    target_id = _target_with_2fa(app)
    target_session = app.test_client()
    password_step(target_session, "handlowiec@example.com")
    clock.advance(30)
    assert code_step(target_session, oath(SECRET, clock.now)).status_code == 302
    url = f"/admin/users/{target_id}/2fa/reset"
    page = admin_client.get(url).get_data(as_text=True)
    assert "handlowiec@example.com" in page and "your password alone confirms" in page
    assert 'name="code"' not in page
    wrong = admin_client.post(url, data={"password": "wrong wrong wrong"})
    assert "Wrong password." in wrong.get_data(as_text=True)
    assert user_state(app, "handlowiec@example.com").totp_enabled_at is not None
    assert target_session.get("/clients/").status_code == 200
    done = admin_client.post(url, data={"password": TEST_PASSWORD, "next": "/admin/fields/"})
    assert done.headers["Location"] == "/admin/fields/"
    state = user_state(app, "handlowiec@example.com")
    assert state.totp_enabled_at is None and state.totp_secret is None
    # The target is signed out everywhere and signs in with the password alone.
    assert target_session.get("/clients/").status_code == 302
    assert password_step(target_session, "handlowiec@example.com").headers["Location"] == "/"
    [entry] = entries(app, "2fa_reset")
    assert entry.target_id == target_id and entry.actor_email == "admin@example.com"
    assert entry.details == {
        "by": "admin",
        "email": "handlowiec@example.com",
        "recovery_codes_removed": 10,
    }


def test_admin_reset_with_own_2fa_needs_the_admin_password_and_code(client, app, admin, clock):
    admin_secret = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU"
    enable_2fa(app, "admin@example.com", secret=admin_secret)
    password_step(client, "admin@example.com")
    assert code_step(client, oath(admin_secret, T0)).status_code == 302
    target_id = _target_with_2fa(app)
    url = f"/admin/users/{target_id}/2fa/reset"
    assert 'name="code"' in client.get(url).get_data(as_text=True)
    no_code = client.post(url, data={"password": TEST_PASSWORD})
    assert "Enter a current code" in no_code.get_data(as_text=True)
    # The code just used to sign in is spent; the target's code is not the admin's.
    for code in [oath(admin_secret, T0), oath(SECRET, T0 + 30)]:
        refused = client.post(url, data={"password": TEST_PASSWORD, "code": code})
        assert WRONG_CODE in refused.get_data(as_text=True)
    assert user_state(app, "handlowiec@example.com").totp_enabled_at is not None
    clock.advance(30)
    done = client.post(url, data={"password": TEST_PASSWORD, "code": oath(admin_secret, clock.now)})
    assert done.status_code == 302
    assert user_state(app, "handlowiec@example.com").totp_enabled_at is None
    assert user_state(app, "admin@example.com").totp_enabled_at is not None
    assert [e.target_id for e in entries(app, "2fa_reset")] == [target_id]


def test_admin_reset_needs_the_permission_and_an_existing_user(client, app, admin):
    target_id = _target_with_2fa(app)
    with app.app_context():
        make_user("manager@example.com", role="manager", name="Mia")
    login(client, "manager@example.com")
    url = f"/admin/users/{target_id}/2fa/reset"
    assert client.get(url).status_code == 403
    assert client.post(url, data={"password": TEST_PASSWORD}).status_code == 403
    assert user_state(app, "handlowiec@example.com").totp_enabled_at is not None
    client.post("/logout")
    login(client, "admin@example.com")
    assert client.get("/admin/users/999999/2fa/reset").status_code == 404


def test_admin_reset_of_a_user_without_2fa_changes_nothing(admin_client, app):
    with app.app_context():
        target_id = make_user("bez@example.com", role="sales", name="Bez").id
    url = f"/admin/users/{target_id}/2fa/reset"
    assert "nothing to reset" in admin_client.get(url).get_data(as_text=True)
    response = admin_client.post(url, data={"password": TEST_PASSWORD})
    assert response.status_code == 302
    assert "2fa_reset" not in actions(app)


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_reset_2fa(app, admin):
    enable_2fa(app, "admin@example.com")
    recovery_codes_for(app, "admin@example.com")
    require_2fa(app, "admin")
    with app.app_context():
        token = find_user("admin@example.com").session_token
    result = app.test_cli_runner().invoke(args=["users", "reset-2fa", "Admin@Example.com"])
    assert result.exit_code == 0, result.output
    assert "Two-factor authentication of admin@example.com was reset" in result.output
    assert "10 unused recovery codes deleted" in result.output
    assert "set up at the next sign-in" in result.output
    state = user_state(app, "admin@example.com")
    assert state.totp_enabled_at is None and state.totp_secret is None
    assert state.session_token != token
    [entry] = entries(app, "2fa_reset")
    assert entry.actor_id is None and entry.details["by"] == "cli"


def test_cli_reset_2fa_of_an_unknown_email_fails_clearly(app):
    result = app.test_cli_runner().invoke(args=["users", "reset-2fa", "ghost@example.com"])
    assert result.exit_code != 0
    assert "no user with the email ghost@example.com" in result.output
