from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from crm.audit.services import record as audit
from crm.auth.forms import LoginForm, UnlockForm
from crm.auth.idle import LOCKED, mark_active
from crm.auth.models import User
from crm.auth.passwords import verify_password
from crm.auth.services import authenticate
from crm.extensions import db, htmx, login_manager
from crm.security import services as security
from crm.web.access import login_only, public
from crm.web.client_ip import client_ip
from crm.web.render import render
from crm.web.urls import safe_next

bp = Blueprint("auth", __name__, template_folder="templates")


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    return db.session.scalar(
        select(User)
        .options(joinedload(User.role))
        .where(User.session_token == session_token, User.active.is_(True))
    )


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


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("web.home"))
    form = LoginForm()
    if form.validate_on_submit():
        ip, email = client_ip(), form.email.data or ""
        if security.login_throttled(ip, email):
            # Refused before the password is checked; the same for unknown emails.
            form.password.errors = [_("Too many attempts. Try again in a few minutes.")]
            return render("auth/login.html", form=form, status=429)
        user = authenticate(email, form.password.data or "")
        if user is not None and not security.ip_allowed(ip, user.role_id):
            db.session.rollback()  # not signed in: keep last_login_at as it was
            user = None
        security.record_login_attempt(ip, email, success=user is not None)
        if user is not None:
            login_user(user)
            mark_active()
            audit("login", actor=user)
            db.session.commit()
            return redirect(safe_next(request.args.get("next")) or url_for("web.home"))
        audit("login_failed", details={"email": email[:254]})
        db.session.commit()  # the failed attempt counts, in every process
        # One message for every failure (wrong password, unknown email, a network
        # outside the allow-list), so it tells neither which emails exist nor that a
        # password was right.
        form.password.errors = [_("Wrong email or password.")]
    return render("auth/login.html", form=form)


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
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))
