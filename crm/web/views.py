from __future__ import annotations

from flask import Blueprint, redirect, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import text

from crm.auth.permissions import Permission
from crm.extensions import db
from crm.web.access import login_only, public

bp = Blueprint("web", __name__)


@bp.route("/")
@login_only
def home() -> ResponseReturnValue:
    if current_user.can(Permission.CLIENTS_VIEW):
        return redirect(url_for("clients.index"))
    return redirect(url_for("tasks.mine"))


@bp.route("/healthz")
@public
def health() -> ResponseReturnValue:
    db.session.execute(text("SELECT 1"))
    return {"status": "ok"}
