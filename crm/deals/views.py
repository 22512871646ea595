from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from crm.auth.permissions import Permission
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("deals", __name__, url_prefix="/deals", template_folder="templates")


@bp.route("/")
@requires(Permission.DEALS_VIEW)
def pipeline() -> ResponseReturnValue:
    return render("deals/pipeline.html")
