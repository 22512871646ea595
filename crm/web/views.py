from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import text

from crm.auth.permissions import Permission
from crm.extensions import db
from crm.privacy import services as privacy
from crm.tasks.services import TaskView, my_task_counts, my_tasks_query
from crm.web.access import login_only, public
from crm.web.render import render

bp = Blueprint("web", __name__)


DASHBOARD_ROWS = 10


@bp.route("/")
@login_only
def home() -> ResponseReturnValue:
    """The dashboard: open data-subject requests (for those who answer them), the
    user's own open tasks, and the way to the rest."""
    today = privacy.org_date()
    context: dict[str, Any] = {"today": today, "requests": None, "tasks": None}
    if current_user.can(Permission.REQUESTS_MANAGE):
        context["requests"] = privacy.open_requests_for_dashboard(current_user, DASHBOARD_ROWS)
        context["request_counts"] = privacy.register_counts(current_user, today)
    if current_user.can(Permission.TASKS_VIEW):
        stmt = my_tasks_query(current_user, TaskView.OPEN).limit(DASHBOARD_ROWS)
        context["tasks"] = list(db.session.scalars(stmt).unique())
        context["task_counts"] = my_task_counts(current_user, today)
    return render("web/home.html", **context)


@bp.route("/healthz")
@public
def health() -> ResponseReturnValue:
    db.session.execute(text("SELECT 1"))
    return {"status": "ok"}
