from __future__ import annotations

from flask import Blueprint, flash, redirect, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from crm.auth.permissions import Permission
from crm.extensions import db
from crm.org.forms import OrganisationForm
from crm.org.services import organisation_for_update
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("org", __name__, url_prefix="/admin/organisation", template_folder="templates")


@bp.route("/", methods=["GET", "POST"])
@requires(Permission.SETTINGS_MANAGE)
def settings() -> ResponseReturnValue:
    org = organisation_for_update()
    form = OrganisationForm(obj=org)
    if form.validate_on_submit():
        form.populate_obj(org)
        db.session.commit()
        flash(_("Organisation settings saved."), "success")
        return redirect(url_for("org.settings"))
    return render("org/settings.html", form=form)
