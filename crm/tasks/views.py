from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from crm.auth.permissions import Permission
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("tasks", __name__, url_prefix="/tasks", template_folder="templates")


@bp.route("/")
@requires(Permission.TASKS_VIEW)
def mine() -> ResponseReturnValue:
    return render("tasks/mine.html")
