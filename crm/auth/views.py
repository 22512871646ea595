from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from crm.auth.forms import LoginForm
from crm.auth.models import User
from crm.auth.services import authenticate
from crm.extensions import db, htmx, login_manager
from crm.web.access import login_only, public
from crm.web.render import render
from crm.web.urls import safe_next

bp = Blueprint("auth", __name__, template_folder="templates")


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    return db.session.query(User).filter_by(session_token=session_token, active=True).first()


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
        user = authenticate(form.email.data or "", form.password.data or "")
        if user is not None:
            login_user(user)
            db.session.commit()
            return redirect(safe_next(request.args.get("next")) or url_for("web.home"))
        # One message for every failure, so it does not tell which emails exist.
        form.password.errors = [_("Wrong email or password.")]
    return render("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_only
def logout() -> ResponseReturnValue:
    logout_user()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))
