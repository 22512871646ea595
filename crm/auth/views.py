from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from crm.audit.services import record as audit
from crm.auth import twofactor
from crm.auth.forms import (
    AdminResetTwoFactorForm,
    DisableTwoFactorForm,
    EnrolForm,
    LoginForm,
    RegenerateCodesForm,
    SecondFactorForm,
    UnlockForm,
)
from crm.auth.idle import LOCKED, mark_active
from crm.auth.models import User
from crm.auth.passwords import verify_password
from crm.auth.permissions import Permission
from crm.auth.services import check_credentials
from crm.extensions import db, htmx, login_manager
from crm.org.services import organisation, remember_settings_token, settings_token_column
from crm.security import services as security
from crm.sqltypes import utcnow
from crm.web.access import login_only, public, requires
from crm.web.client_ip import client_ip
from crm.web.render import render
from crm.web.urls import safe_next

bp = Blueprint("auth", __name__, template_folder="templates")


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    # The settings token (crm.org.services.shared) comes along: one round trip, not two.
    row = db.session.execute(
        select(User, settings_token_column())
        .options(joinedload(User.role))
        .where(User.session_token == session_token, User.active.is_(True))
    ).first()
    if row is None:
        return None
    user, token = row
    remember_settings_token(token)
    return user


@login_manager.unauthorized_handler
def unauthorized() -> ResponseReturnValue:
    target = request.full_path
    if htmx and request.headers.get("HX-Current-URL"):
        # After signing in, return to the page, not to the fragment htmx asked for.
        current = urlsplit(request.headers["HX-Current-URL"])
        target = current.path + (f"?{current.query}" if current.query else "")
    login_url = url_for("auth.login", next=safe_next(target))
    if htmx:
        # An htmx swap must not put a login form into a table cell: reload the page.
        return "", 401, {"HX-Redirect": login_url}
    return redirect(login_url)


def _throttled_message() -> str:
    return _("Too many attempts. Try again in a few minutes.")


def _wrong_code_message() -> str:
    return _("Wrong or expired code.")


# --- signing in: password, then (when on or required) the second factor ---------------

# The half-signed-in state between a correct password and the second factor. It is not
# a Flask-Login session: current_user stays anonymous, so no page but the 2FA steps
# (which are public and look for this marker) can be reached with it.
PENDING = "2fa_pending"
PENDING_SECONDS = 5 * 60
# Fingerprint of the secret being set up in this browser session: a reload shows the
# same QR code, while a set-up begun in another session starts afresh.
ENROLMENT = "2fa_enrolment"


def _start_pending(user: User) -> None:
    session[PENDING] = {
        "uid": user.id,
        "exp": int(time.time()) + PENDING_SECONDS,
        # A session revocation (2FA reset, password change) also ends a pending sign-in.
        "tok": twofactor.fingerprint(user.session_token),
    }


def _clear_pending() -> None:
    session.pop(PENDING, None)


def _pending_user() -> User | None:
    data = session.get(PENDING)
    if not isinstance(data, dict):
        return None
    user = None
    if int(data.get("exp") or 0) >= time.time():
        user = db.session.scalar(
            select(User)
            .options(joinedload(User.role))
            .where(User.id == data.get("uid"), User.active.is_(True))
        )
    if user is None or twofactor.fingerprint(user.session_token) != data.get("tok"):
        _clear_pending()
        return None
    return user


def _sign_in(user: User, **details: Any) -> None:
    """The one place a sign-in completes (the caller commits)."""
    _clear_pending()
    session.pop(ENROLMENT, None)
    user.last_login_at = utcnow()
    login_user(user)
    mark_active()
    audit("login", actor=user, details=details or None)


def _after_sign_in(target: str | None) -> ResponseReturnValue:
    return redirect(target or url_for("web.home"))


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("web.home"))
    if request.method == "GET":
        _clear_pending()  # back on the first step: a half-finished sign-in starts over
    form = LoginForm()
    if form.validate_on_submit():
        ip, email = client_ip(), form.email.data or ""
        if security.login_throttled(ip, email):
            # Refused before the password is checked; the same for unknown emails.
            form.password.errors = [_throttled_message()]
            return render("auth/login.html", form=form, status=429)
        user = check_credentials(email, form.password.data or "")
        if user is not None and not security.ip_allowed(ip, user.role_id):
            user = None
        security.record_login_attempt(ip, email, success=user is not None)
        if user is not None:
            target = safe_next(request.args.get("next"))
            if twofactor.is_enabled(user) or twofactor.needs_enrolment(user):
                # Not signed in yet: the second factor (or its set-up) comes first.
                _start_pending(user)
                db.session.commit()
                step = "auth.login_2fa" if twofactor.is_enabled(user) else "auth.login_2fa_setup"
                return redirect(url_for(step, next=target))
            _sign_in(user)
            db.session.commit()
            return _after_sign_in(target)
        audit("login_failed", details={"email": email[:254]})
        db.session.commit()  # the failed attempt counts, in every process
        # One message for every failure (wrong password, unknown email, a network
        # outside the allow-list), so it tells neither which emails exist nor that a
        # password was right.
        form.password.errors = [_("Wrong email or password.")]
    return render("auth/login.html", form=form)


def _pending_or_restart(target: str | None) -> User | ResponseReturnValue:
    had_pending = PENDING in session
    user = _pending_user()
    if user is None:
        if had_pending:
            flash(_("Your sign-in timed out. Enter your password again."), "info")
        return redirect(url_for("auth.login", next=target))
    return user


@bp.route("/login/2fa", methods=["GET", "POST"])
@public
def login_2fa() -> ResponseReturnValue:
    """Second sign-in step: a code from the app or a recovery code."""
    target = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return _after_sign_in(target)
    user = _pending_or_restart(target)
    if not isinstance(user, User):
        return user
    if not twofactor.is_enabled(user):
        return redirect(url_for("auth.login_2fa_setup", next=target))
    form = SecondFactorForm()
    if form.validate_on_submit():
        ip = client_ip()
        if security.totp_throttled(ip, user.email):
            form.code.errors = [_throttled_message()]
            return render("auth/login_2fa.html", form=form, user=user, status=429)
        method = twofactor.verify_second_factor(user, form.code.data or "")
        security.record_totp_attempt(ip, user.email, success=method is not None)
        if method is not None:
            _sign_in(user, second_factor=method)
            if method == twofactor.METHOD_RECOVERY:
                left = twofactor.remaining_recovery_codes(user)
                audit(
                    "2fa_recovery_code_used",
                    target_type="user",
                    target_id=user.id,
                    details={"remaining": left},
                )
                flash(_recovery_code_notice(left), "info")
            db.session.commit()
            return _after_sign_in(target)
        audit(
            "2fa_failed",
            target_type="user",
            target_id=user.id,
            details={"email": user.email, "step": "login"},
        )
        db.session.commit()  # the failure counts, in every process
        form.code.errors = [_wrong_code_message()]
    return render("auth/login_2fa.html", form=form, user=user)


def _recovery_code_notice(left: int) -> str:
    if left == 0:
        return _(
            "You used your last recovery code. Make new ones now under Security, or you "
            "may be locked out when you lose your phone."
        )
    return _(
        "You signed in with a recovery code; %(n)s are left. If you lost your phone, make "
        "new codes or set up the app again under Security.",
        n=left,
    )


def _enrolment_secret(user: User) -> tuple[str, bool]:
    """The secret this session is setting up, and whether it was made just now."""
    if user.totp_secret and session.get(ENROLMENT) == twofactor.fingerprint(user.totp_secret):
        return user.totp_secret, False
    secret = twofactor.begin_enrolment(user)
    db.session.commit()
    session[ENROLMENT] = twofactor.fingerprint(secret)
    return secret, True


def _enrol(user: User, *, forced: bool, target: str | None) -> ResponseReturnValue:
    """Show the QR code and the key; a correct code turns 2FA on and shows the recovery
    codes once. `forced`: the sign-in flow of a role that requires 2FA."""
    secret, fresh = _enrolment_secret(user)
    form = EnrolForm()
    if form.validate_on_submit():
        if fresh:
            # The secret this form was showing was replaced (set-up started elsewhere).
            form.code.errors = [
                _("The set-up was started again. Scan the new QR code, then enter a code.")
            ]
        else:
            codes = twofactor.confirm_enrolment(user, form.code.data or "")
            if codes is not None:
                session.pop(ENROLMENT, None)
                audit(
                    "2fa_enabled",
                    actor=user,
                    target_type="user",
                    target_id=user.id,
                    details={"at_sign_in": forced},
                )
                if forced:
                    _sign_in(user, second_factor=twofactor.METHOD_TOTP)
                else:
                    # Enabling revoked every session; keep this one signed in.
                    login_user(user)
                    mark_active()
                db.session.commit()
                return render(
                    "auth/recovery_codes.html",
                    codes=codes,
                    just_enabled=True,
                    continue_url=target
                    or (url_for("web.home") if forced else url_for("auth.account_2fa")),
                )
            form.code.errors = [
                _("That code does not match. Check the time on your phone and try again.")
            ]
    issuer = organisation().name
    return render(
        "auth/setup_2fa.html",
        form=form,
        forced=forced,
        user=user,
        secret=secret,
        secret_grouped=twofactor.grouped(secret),
        qr=twofactor.qr_data_uri(twofactor.provisioning_uri(secret, user.email, issuer)),
    )


@bp.route("/login/2fa/setup", methods=["GET", "POST"])
@public
def login_2fa_setup() -> ResponseReturnValue:
    """Forced enrolment: the role requires 2FA and this user has none yet. Signed in
    only once a code confirms the new secret."""
    target = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return _after_sign_in(target)
    user = _pending_or_restart(target)
    if not isinstance(user, User):
        return user
    if twofactor.is_enabled(user):
        return redirect(url_for("auth.login_2fa", next=target))
    if not twofactor.needs_enrolment(user):
        # The role stopped requiring 2FA meanwhile: start over with the password.
        _clear_pending()
        return redirect(url_for("auth.login", next=target))
    return _enrol(user, forced=True, target=target)


MAX_UNLOCK_FAILURES = 5


@bp.route("/lock", methods=["GET", "POST"])
@login_only
def lock() -> ResponseReturnValue:
    """The idle lock screen: the password again, then back to the same page."""
    target = safe_next(request.values.get("next")) or url_for("web.home")
    if not session.get(LOCKED):
        return redirect(target)
    form = UnlockForm()
    if form.validate_on_submit():
        if verify_password(current_user.password_hash, form.password.data or ""):
            session.pop("unlock_failures", None)
            mark_active()
            audit("unlock")
            db.session.commit()
            return redirect(target)
        failures = session.get("unlock_failures", 0) + 1
        session["unlock_failures"] = failures
        audit("unlock_failed")
        db.session.commit()
        if failures >= MAX_UNLOCK_FAILURES:
            session.pop("unlock_failures", None)
            logout_user()
            flash(_("Too many wrong passwords: you are signed out."), "error")
            return redirect(url_for("auth.login"))
        form.password.errors = [_("Wrong password.")]
    return render("auth/lock.html", form=form, target=target)


@bp.route("/logout", methods=["POST"])
@login_only
def logout() -> ResponseReturnValue:
    logout_user()
    _clear_pending()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


# --- the signed-in user's own 2FA -------------------------------------------------------


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[attr-defined,no-any-return]


def _check_code(user: User, form_field: Any, *, step: str, allow_recovery: bool) -> bool | None:
    """Check a code typed by a signed-in user, counted and throttled like the sign-in
    step. True: accepted; False: wrong (error set); None: throttled (error set)."""
    ip = client_ip()
    if security.totp_throttled(ip, user.email):
        form_field.errors = [_throttled_message()]
        return None
    code = form_field.data or ""
    if allow_recovery:
        method = twofactor.verify_second_factor(user, code)
    else:
        method = twofactor.METHOD_TOTP if twofactor.verify_totp(user, code) else None
    security.record_totp_attempt(ip, user.email, success=method is not None)
    if method == twofactor.METHOD_RECOVERY:
        audit(
            "2fa_recovery_code_used",
            target_type="user",
            target_id=user.id,
            details={"remaining": twofactor.remaining_recovery_codes(user), "step": step},
        )
    if method is None:
        audit(
            "2fa_failed",
            target_type="user",
            target_id=user.id,
            details={"email": user.email, "step": step},
        )
        form_field.errors = [_wrong_code_message()]
        return False
    return True


def _check_password(user: User, form_field: Any) -> bool | None:
    """Re-authentication with the password: failures count as password attempts."""
    ip = client_ip()
    if security.login_throttled(ip, user.email):
        form_field.errors = [_throttled_message()]
        return None
    if verify_password(user.password_hash, form_field.data or ""):
        return True
    security.record_login_attempt(ip, user.email, success=False)
    form_field.errors = [_("Wrong password.")]
    return False


@bp.route("/account/2fa")
@login_only
def account_2fa() -> ResponseReturnValue:
    user = _me()
    return render(
        "auth/account_2fa.html",
        user=user,
        enabled=twofactor.is_enabled(user),
        required=bool(user.role.require_2fa),
        remaining=twofactor.remaining_recovery_codes(user),
        total=twofactor.RECOVERY_CODE_COUNT,
    )


@bp.route("/account/2fa/setup", methods=["GET", "POST"])
@login_only
def setup_2fa() -> ResponseReturnValue:
    user = _me()
    if twofactor.is_enabled(user):
        flash(_("Two-factor authentication is on already."), "info")
        return redirect(url_for("auth.account_2fa"))
    return _enrol(user, forced=False, target=None)


@bp.route("/account/2fa/recovery-codes", methods=["GET", "POST"])
@login_only
def regenerate_recovery_codes() -> ResponseReturnValue:
    user = _me()
    if not twofactor.is_enabled(user):
        return redirect(url_for("auth.account_2fa"))
    form = RegenerateCodesForm()
    status = 200
    if form.validate_on_submit():
        accepted = _check_code(user, form.code, step="recovery_codes", allow_recovery=True)
        if accepted:
            codes = twofactor.replace_recovery_codes(user)
            audit("2fa_recovery_codes_renewed", target_type="user", target_id=user.id)
            db.session.commit()
            return render(
                "auth/recovery_codes.html",
                codes=codes,
                just_enabled=False,
                continue_url=url_for("auth.account_2fa"),
            )
        db.session.commit()  # the failed attempt counts
        status = 429 if accepted is None else 200
    return render(
        "auth/regenerate_codes.html",
        status=status,
        form=form,
        remaining=twofactor.remaining_recovery_codes(user),
    )


@bp.route("/account/2fa/disable", methods=["GET", "POST"])
@login_only
def disable_2fa() -> ResponseReturnValue:
    user = _me()
    if not twofactor.is_enabled(user):
        return redirect(url_for("auth.account_2fa"))
    required = bool(user.role.require_2fa)
    form = DisableTwoFactorForm()
    status = 200
    if required:
        # Refused whatever was sent: the role demands 2FA (the page explains).
        status = 403 if request.method == "POST" else 200
    elif form.validate_on_submit():
        checked = _check_password(user, form.password)
        if checked:
            checked = _check_code(user, form.code, step="disable", allow_recovery=True)
        if checked:
            twofactor.disable(user)
            audit("2fa_disabled", target_type="user", target_id=user.id)
            # Turning 2FA off signed out every session; keep this one.
            login_user(user)
            mark_active()
            db.session.commit()
            flash(
                _("Two-factor authentication is off. Other sessions were signed out."),
                "success",
            )
            return redirect(url_for("auth.account_2fa"))
        db.session.commit()  # the failed attempt counts
        status = 429 if checked is None else 200
    return render("auth/disable_2fa.html", status=status, form=form, required=required)


# --- an administrator resets another user's 2FA -------------------------------------------


@bp.route("/admin/users/<int:user_id>/2fa/reset", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def admin_reset_2fa(user_id: int) -> ResponseReturnValue:
    """Turn off a user's 2FA (lost phone): they set it up again, and are signed out
    everywhere. The admin confirms with their own password and, if they have 2FA, a
    current code of their own."""
    target = db.session.get(User, user_id)
    if target is None:
        abort(404)
    admin = _me()
    admin_has_2fa = twofactor.is_enabled(admin)
    back = safe_next(request.values.get("next"))
    form = AdminResetTwoFactorForm()
    status = 200
    if request.method == "POST" and not twofactor.is_enabled(target):
        message = _(
            "%(email)s has no two-factor authentication; nothing was changed.", email=target.email
        )
        flash(message, "info")
        return redirect(back or url_for("auth.admin_reset_2fa", user_id=target.id))
    if form.validate_on_submit():
        if admin_has_2fa and not (form.code.data or "").strip():
            form.code.errors = [_("Enter a current code from your authenticator app.")]
            return render(
                "auth/admin_reset_2fa.html",
                status=200,
                **_reset_context(target, form, admin_has_2fa, back),
            )
        checked = _check_password(admin, form.password)
        if checked and admin_has_2fa:
            checked = _check_code(admin, form.code, step="admin_reset", allow_recovery=False)
        if checked:
            removed = twofactor.disable(target)
            audit(
                "2fa_reset",
                target_type="user",
                target_id=target.id,
                details={"by": "admin", "email": target.email, "recovery_codes_removed": removed},
            )
            db.session.commit()
            flash(
                _(
                    "Two-factor authentication of %(email)s was reset and they were signed "
                    "out everywhere.",
                    email=target.email,
                ),
                "success",
            )
            return redirect(back or url_for("auth.admin_reset_2fa", user_id=target.id))
        db.session.commit()  # the failed attempt counts
        status = 429 if checked is None else 200
    return render(
        "auth/admin_reset_2fa.html",
        status=status,
        **_reset_context(target, form, admin_has_2fa, back),
    )


def _reset_context(
    target: User, form: AdminResetTwoFactorForm, admin_has_2fa: bool, back: str | None
) -> dict[str, Any]:
    return {
        "target": target,
        "form": form,
        "admin_has_2fa": admin_has_2fa,
        "target_enabled": twofactor.is_enabled(target),
        "back": back,
    }
