"""Two-factor authentication: TOTP codes (checked against oathtool, not pyotp, so the
implementation is not checked against itself), replay refusal, recovery codes, the
two-step sign-in, forced enrolment and 2FA throttling. Helpers here are shared with
test_twofactor_account.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.auth import twofactor
from crm.auth.models import RecoveryCode, Role, User
from crm.auth.services import find_user
from crm.extensions import db
from crm.security import services as security
from crm.security.models import LoginAttempt
from crm.sqltypes import utcnow
from tests.conftest import TEST_PASSWORD, make_user

# A step boundary (1 800 000 000 / 30 is whole), so "+ 29 s" stays in the same step.
T0 = 1_800_000_000
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
RECOVERY_PATTERN = re.compile(r"^[2-9a-hjkmnp-z]{4}-[2-9a-hjkmnp-z]{4}$")


def oath(secret: str, at: float) -> str:
    """The TOTP code of `secret` at Unix time `at`, computed by oathtool."""
    tool = shutil.which("oathtool")
    if tool is None:
        pytest.skip("oathtool is not installed (Debian: apt-get install oathtool)")
    result = subprocess.run(  # noqa: S603 (fixed program, arguments from the test)
        [tool, "--totp", "-b", secret, "-N", f"@{int(at)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


class Clock:
    """Stands in for twofactor.clock: the time only moves when a test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def enable_2fa(app: Flask, email: str, secret: str = SECRET, last_step: int | None = None) -> None:
    """2FA on for `email` without the web flow (and without recovery codes)."""
    with app.app_context():
        user = find_user(email)
        assert user is not None
        user.totp_secret = secret
        user.totp_enabled_at = utcnow()
        user.totp_last_step = last_step
        db.session.commit()


def recovery_codes_for(app: Flask, email: str) -> list[str]:
    with app.app_context():
        user = find_user(email)
        assert user is not None
        codes = twofactor.replace_recovery_codes(user)
        db.session.commit()
        return codes


def require_2fa(app: Flask, role: str) -> None:
    with app.app_context():
        db.session.scalar(select(Role).where(Role.name == role)).require_2fa = True
        db.session.commit()


def user_state(app: Flask, email: str) -> User:
    with app.app_context():
        user = find_user(email)
        assert user is not None
        db.session.expunge(user)
        return user


def actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def entries(app: Flask, action: str) -> list[AuditEntry]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
        for row in rows:
            db.session.expunge(row)
        return rows


def password_step(
    client: FlaskClient, email: str, next_: str | None = None, password: str = TEST_PASSWORD
):  # type: ignore[no-untyped-def]
    url = "/login" + (f"?next={next_}" if next_ else "")
    return client.post(url, data={"email": email, "password": password})


def code_step(client: FlaskClient, code: str, next_: str | None = None):  # type: ignore[no-untyped-def]
    url = "/login/2fa" + (f"?next={next_}" if next_ else "")
    return client.post(url, data={"code": code})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(T0)
    monkeypatch.setattr(twofactor, "clock", fixed)
    return fixed


STEP0 = T0 // 30
THROTTLED = "Too many attempts. Try again in a few minutes."
WRONG_CODE = "Wrong or expired code."


# --- codes ------------------------------------------------------------------------------


def test_a_code_matches_its_own_step_and_one_step_of_drift_either_way():
    code = oath(SECRET, T0)
    assert twofactor.match_step(SECRET, code, now=T0) == STEP0
    assert twofactor.match_step(SECRET, code, now=T0 + 29) == STEP0
    # The code of the step before (a slow phone, a slow typist) is still accepted...
    assert twofactor.match_step(SECRET, oath(SECRET, T0 - 30), now=T0) == STEP0 - 1
    # ...and of the step after (a phone clock running ahead).
    assert twofactor.match_step(SECRET, oath(SECRET, T0 + 30), now=T0) == STEP0 + 1
    # Two steps away either way is refused.
    assert twofactor.match_step(SECRET, oath(SECRET, T0 - 60), now=T0) is None
    assert twofactor.match_step(SECRET, oath(SECRET, T0 + 60), now=T0) is None


def test_codes_are_read_with_spaces_and_dashes_and_garbage_is_refused():
    code = oath(SECRET, T0)
    assert twofactor.match_step(SECRET, f" {code[:3]} {code[3:]} ", now=T0) == STEP0
    assert twofactor.match_step(SECRET, f"{code[:3]}-{code[3:]}", now=T0) == STEP0
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code)  # as typed with an East Asian IME
    assert twofactor.match_step(SECRET, full_width, now=T0) == STEP0
    for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", code + "0"]:
        assert twofactor.match_step(SECRET, bad, now=T0) is None, bad
    assert twofactor.match_step("", code, now=T0) is None


def test_steps_at_or_before_the_last_accepted_one_are_refused():
    code = oath(SECRET, T0)
    assert twofactor.match_step(SECRET, code, now=T0, after_step=STEP0 - 1) == STEP0
    assert twofactor.match_step(SECRET, code, now=T0, after_step=STEP0) is None
    earlier = oath(SECRET, T0 - 30)
    assert twofactor.match_step(SECRET, earlier, now=T0, after_step=STEP0 - 1) is None


def test_a_code_is_accepted_once(app, admin):
    enable_2fa(app, "admin@example.com")
    code = oath(SECRET, T0)
    with app.app_context():
        user = find_user("admin@example.com")
        assert twofactor.verify_totp(user, code, now=T0)
        assert user.totp_last_step == STEP0
        # The same code again, even a second later in the same step: refused.
        assert not twofactor.verify_totp(user, code, now=T0 + 1)
        # The previous step's code is inside the drift window but older than the last.
        assert not twofactor.verify_totp(user, oath(SECRET, T0 - 30), now=T0 + 1)
        assert twofactor.verify_totp(user, oath(SECRET, T0 + 30), now=T0 + 30)
        db.session.commit()
    assert user_state(app, "admin@example.com").totp_last_step == STEP0 + 1


def test_a_code_is_refused_when_another_request_used_its_step_meanwhile(app, admin):
    """The step moves with a conditional UPDATE: a request that read an older
    totp_last_step (a concurrent one) cannot accept the same code again."""
    enable_2fa(app, "admin@example.com")
    code = oath(SECRET, T0)
    with app.app_context():
        stale = find_user("admin@example.com")
        assert stale.totp_last_step is None
        db.session.execute(db.update(User).where(User.id == stale.id).values(totp_last_step=STEP0))
        assert not twofactor.verify_totp(stale, code, now=T0)


def test_secret_uri_and_qr_code(app):
    secret = twofactor.new_secret()
    assert len(secret) == 32 and re.fullmatch(r"[A-Z2-7]+", secret)
    assert twofactor.new_secret() != secret
    assert twofactor.grouped("ABCDEFGHIJKL") == "ABCD EFGH IJKL"
    uri = twofactor.provisioning_uri(secret, "ada@example.com", "Zakład Łódź")
    assert uri.startswith("otpauth://totp/")
    assert f"secret={secret}" in uri and "ada%40example.com" in uri and "issuer=" in uri
    assert twofactor.qr_data_uri(uri).startswith("data:image/svg+xml")


def test_recovery_codes_are_readable_distinct_hashed_and_work_once(app, admin):
    enable_2fa(app, "admin@example.com")
    codes = recovery_codes_for(app, "admin@example.com")
    assert len(codes) == len(set(codes)) == 10
    assert all(RECOVERY_PATTERN.match(code) for code in codes), codes
    with app.app_context():
        user = find_user("admin@example.com")
        hashes = db.session.scalars(
            select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id)
        ).all()
        assert len(hashes) == 10
        assert all(h.startswith("$argon2") for h in hashes)
        assert not any(code.replace("-", "") in h for code in codes for h in hashes)
        # Typed without the dash, in capitals, with spaces: still the same code.
        typed = " " + codes[3].replace("-", " ").upper() + " "
        assert twofactor.verify_second_factor(user, typed) == twofactor.METHOD_RECOVERY
        assert twofactor.verify_second_factor(user, codes[3]) is None
        assert twofactor.remaining_recovery_codes(user) == 9
        assert twofactor.verify_second_factor(user, "2222-2222") is None
        db.session.commit()


# --- the two-step sign-in ------------------------------------------------------------------


def test_sign_in_with_password_and_code_keeps_next(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    first = password_step(client, "admin@example.com", next_="/admin/fields/")
    assert first.status_code == 302
    assert first.headers["Location"] == "/login/2fa?next=/admin/fields/"
    # Half signed in: no page of the app yet, and no "login" in the audit log.
    assert client.get("/clients/").headers["Location"].startswith("/login")
    assert "login" not in actions(app)
    page = client.get(first.headers["Location"]).get_data(as_text=True)
    assert "Two-factor authentication" in page and 'name="code"' in page
    wrong = code_step(
        client, "000000" if oath(SECRET, T0) != "000000" else "111111", "/admin/fields/"
    )
    assert wrong.status_code == 200 and WRONG_CODE in wrong.get_data(as_text=True)
    assert client.get("/clients/").status_code == 302
    right = code_step(client, oath(SECRET, T0), "/admin/fields/")
    assert right.status_code == 302 and right.headers["Location"] == "/admin/fields/"
    assert client.get("/clients/").status_code == 200
    assert actions(app).count("login") == 1 and "2fa_failed" in actions(app)
    assert entries(app, "login")[0].details == {"second_factor": "totp"}
    with app.app_context():
        kinds = db.session.execute(
            select(LoginAttempt.kind, LoginAttempt.success).order_by(LoginAttempt.id)
        ).all()
    assert [tuple(k) for k in kinds] == [("password", True), ("totp", False), ("totp", True)]


def test_a_replayed_code_is_refused_at_sign_in(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    code = oath(SECRET, T0)
    password_step(client, "admin@example.com")
    assert code_step(client, code).status_code == 302
    client.post("/logout")
    clock.advance(10)  # same step, a code an onlooker could have read
    password_step(client, "admin@example.com")
    again = code_step(client, code)
    assert again.status_code == 200 and WRONG_CODE in again.get_data(as_text=True)
    assert client.get("/clients/").status_code == 302
    clock.advance(30)
    assert code_step(client, oath(SECRET, clock.now)).status_code == 302


def test_a_recovery_code_signs_in_once(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    codes = recovery_codes_for(app, "admin@example.com")
    password_step(client, "admin@example.com")
    used = code_step(client, codes[0].upper())
    assert used.status_code == 302
    assert "9 are left" in client.get("/account/2fa").get_data(as_text=True)
    client.post("/logout")
    password_step(client, "admin@example.com")
    again = code_step(client, codes[0])
    assert again.status_code == 200 and WRONG_CODE in again.get_data(as_text=True)
    assert client.get("/clients/").status_code == 302
    [entry] = entries(app, "2fa_recovery_code_used")
    assert entry.details == {"remaining": 9}
    assert entry.target_id == user_state(app, "admin@example.com").id


def test_the_second_step_without_a_password_step_goes_back_to_login(client, app, admin):
    enable_2fa(app, "admin@example.com")
    response = client.post("/login/2fa?next=/clients/", data={"code": oath(SECRET, T0)})
    assert response.headers["Location"] == "/login?next=/clients/"
    assert client.get("/login/2fa/setup").headers["Location"] == "/login"


def test_a_pending_sign_in_expires(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    password_step(client, "admin@example.com")
    with client.session_transaction() as session:
        session["2fa_pending"] = {**session["2fa_pending"], "exp": int(time.time()) - 1}
    response = code_step(client, oath(SECRET, T0))
    assert response.headers["Location"] == "/login"
    assert "timed out" in client.get("/login").get_data(as_text=True)
    assert client.get("/clients/").status_code == 302


def test_a_2fa_reset_between_the_steps_ends_the_pending_sign_in(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    password_step(client, "admin@example.com")
    with app.app_context():
        twofactor.disable(find_user("admin@example.com"))
        db.session.commit()
    assert code_step(client, oath(SECRET, T0)).headers["Location"] == "/login"


def test_the_pending_state_reaches_no_page_and_no_lock_screen(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    password_step(client, "admin@example.com")
    for path in ["/", "/clients/", "/account/2fa", "/lock", "/admin/users/1/2fa/reset"]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login"), path
    htmx = client.get("/clients/", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")
    assert client.post("/lock", data={"password": TEST_PASSWORD}).status_code == 302
    # The user behind the pending state is not the current user anywhere.
    assert "Sign out" not in client.get("/login/2fa").get_data(as_text=True)


def test_users_without_2fa_still_sign_in_with_the_password_alone(client, app, admin):
    response = password_step(client, "admin@example.com", next_="/admin/fields/")
    assert response.headers["Location"] == "/admin/fields/"
    assert entries(app, "login")[0].details == {}
    with app.app_context():
        assert find_user("admin@example.com").last_login_at is not None


def test_last_login_changes_only_after_the_second_factor(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    password_step(client, "admin@example.com")
    assert user_state(app, "admin@example.com").last_login_at is None
    code_step(client, oath(SECRET, T0))
    assert user_state(app, "admin@example.com").last_login_at is not None


# --- forced enrolment ------------------------------------------------------------------------


def _secret_on(page: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*data-secret="([A-Z2-7]+)"[^>]*>([A-Z2-7 ]+)<', page)
    assert match, page
    assert match.group(2).replace(" ", "") == match.group(1)
    return match.group(1)


def test_a_role_that_requires_2fa_forces_enrolment_before_any_page(client, app, clock):
    with app.app_context():
        make_user("sprzedawca@example.com", role="sales", name="Sam Sales")
    require_2fa(app, "sales")
    first = password_step(client, "sprzedawca@example.com", next_="/clients/")
    assert first.headers["Location"] == "/login/2fa/setup?next=/clients/"
    page = client.get(first.headers["Location"]).get_data(as_text=True)
    assert "Your role requires two-factor authentication" in page
    assert 'src="data:image/svg+xml' in page and '<label for="code"' in page
    secret = _secret_on(page)
    # A reload shows the same secret (the QR code already scanned stays valid).
    assert _secret_on(client.get(first.headers["Location"]).get_data(as_text=True)) == secret
    # Not signed in before the set-up is confirmed.
    assert client.get("/clients/").headers["Location"].startswith("/login")
    assert client.get("/login/2fa").headers["Location"].startswith("/login/2fa/setup")
    wrong = client.post(first.headers["Location"], data={"code": "12345"})
    assert "does not match" in wrong.get_data(as_text=True)
    assert client.get("/clients/").status_code == 302
    done = client.post(first.headers["Location"], data={"code": oath(secret, T0)})
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and "shown only this once" in body
    assert len(re.findall(r"<li><code>[2-9a-z]{4}-[2-9a-z]{4}</code></li>", body)) == 10
    assert 'href="/clients/"' in body
    assert client.get("/clients/").status_code == 200
    state = user_state(app, "sprzedawca@example.com")
    assert state.totp_enabled_at is not None and state.totp_last_step == STEP0
    assert actions(app)[-2:] == ["2fa_enabled", "login"]
    # The next sign-in asks for a code, not for a set-up.
    client.post("/logout")
    assert password_step(client, "sprzedawca@example.com").headers["Location"] == "/login/2fa"


def test_a_role_without_the_requirement_is_not_forced(client, app):
    with app.app_context():
        make_user("sprzedawca@example.com", role="sales", name="Sam Sales")
    assert password_step(client, "sprzedawca@example.com").headers["Location"] == "/"


# --- throttling ---------------------------------------------------------------------------------


def test_five_wrong_codes_throttle_the_account_even_for_the_right_code(client, app, admin, clock):
    enable_2fa(app, "admin@example.com")
    password_step(client, "admin@example.com")
    for _ in range(5):
        assert WRONG_CODE in code_step(client, "999999").get_data(as_text=True)
    refused = code_step(client, oath(SECRET, T0))
    assert refused.status_code == 429 and THROTTLED in refused.get_data(as_text=True)
    assert client.get("/clients/").status_code == 302
    # From another address too (per account), while the password count is untouched.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert password_step(other, "admin@example.com").status_code == 302
    assert code_step(other, oath(SECRET, T0)).status_code == 429
    with app.app_context():
        assert not security.login_throttled("127.0.0.1", "admin@example.com")
        assert security.totp_throttled("127.0.0.1", "admin@example.com")
    assert actions(app).count("2fa_failed") == 5


def test_2fa_and_password_failures_are_counted_apart(app):
    with app.app_context():
        for _ in range(security.MAX_TOTP_ACCOUNT_FAILURES):
            security.record_totp_attempt("198.51.100.7", "a@example.com", success=False)
        assert security.totp_throttled("192.0.2.1", "A@example.com")
        assert not security.login_throttled("192.0.2.1", "a@example.com")
        for _ in range(security.MAX_ACCOUNT_FAILURES):
            security.record_login_attempt("198.51.100.8", "b@example.com", success=False)
        assert security.login_throttled("192.0.2.1", "b@example.com")
        assert not security.totp_throttled("192.0.2.1", "b@example.com")
        db.session.rollback()


def test_twenty_wrong_codes_from_one_address_throttle_it(app):
    with app.app_context():
        for i in range(security.MAX_TOTP_IP_FAILURES):
            security.record_totp_attempt("198.51.100.7", f"u{i}@example.com", success=False)
        assert security.totp_throttled("198.51.100.7", "fresh@example.com")
        assert not security.totp_throttled("198.51.100.8", "fresh@example.com")
        later = utcnow() + security.THROTTLE_WINDOW + timedelta(seconds=1)
        assert not security.totp_throttled("198.51.100.7", "fresh@example.com", now=later)
        db.session.rollback()
