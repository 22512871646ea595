from __future__ import annotations

from flask import Blueprint, flash, redirect, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm.auth.permissions import Permission
from crm.consents.forms import BASIS_LABELS
from crm.consents.models import ConsentPurpose, LegalBasis
from crm.extensions import db
from crm.org.forms import OrganisationForm
from crm.org.services import organisation, organisation_for_update
from crm.web.access import public, requires
from crm.web.render import render

# No URL prefix: the settings live under /admin, the public privacy notice at /privacy.
bp = Blueprint("org", __name__, template_folder="templates")


@bp.route("/admin/organisation/", methods=["GET", "POST"])
@requires(Permission.SETTINGS_MANAGE)
def settings() -> ResponseReturnValue:
    from crm.appointments.reminders import reminders_purpose, set_reminders_basis

    org = organisation_for_update()
    form = OrganisationForm(obj=org)
    if not form.is_submitted():
        form.reminders_basis.data = reminders_purpose().legal_basis
    if form.validate_on_submit():
        basis = form.reminders_basis.data
        del form.reminders_basis  # not a column of the organisation
        form.populate_obj(org)
        if basis != reminders_purpose().legal_basis:
            set_reminders_basis(LegalBasis(basis), actor=current_user)
        db.session.commit()
        flash(_("Organisation settings saved."), "success")
        return redirect(url_for("org.settings"))
    return render("org/settings.html", form=form)


@bp.route("/privacy")
@public
def privacy_notice() -> ResponseReturnValue:
    """The full privacy notice (GDPR Art. 13/14) the short clauses on public forms link
    to, generated from the organisation settings and the register of purposes, so it
    always says what the CRM actually does."""
    purposes = db.session.scalars(
        select(ConsentPurpose)
        .where(ConsentPurpose.archived_at.is_(None))
        .order_by(ConsentPurpose.name, ConsentPurpose.id)
    ).all()
    org = organisation()
    recipients = [line.strip() for line in (org.recipients or "").splitlines() if line.strip()]
    return render(
        "org/privacy_notice.html",
        org=org,
        purposes=purposes,
        recipients=recipients,
        basis_labels=BASIS_LABELS,
    )
