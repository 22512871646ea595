from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from sqlalchemy import select

from crm.auth.models import Role
from crm.auth.permissions import Permission
from crm.extensions import db, htmx
from crm.security import services
from crm.security.forms import NetworkForm, RemoveNetworkForm
from crm.security.models import AllowedNetwork
from crm.web.access import requires
from crm.web.client_ip import client_ip
from crm.web.render import render

bp = Blueprint("security", __name__, url_prefix="/admin/network", template_folder="templates")


def enforce_network() -> Any:
    """Before every request, after enforce_access: a signed-in user must be allowed."""
    endpoint = request.endpoint
    if endpoint == "static" or (endpoint or "").endswith(".static"):
        return None
    if not current_user.is_authenticated:
        return None
    if services.ip_allowed(client_ip(), current_user.role_id):
        return None
    logout_user()
    context = {
        "code": 403,
        "title": _("Not allowed"),
        "message": _("Your network is not allowed."),
    }
    template = "errors/_error.html" if htmx else "errors/error.html"
    response = make_response(render_template(template, **context), 403)
    if htmx:
        response.headers["HX-Redirect"] = url_for("auth.login")
    response.vary.add("HX-Request")
    return response


def _role_choices() -> list[tuple[str, str]]:
    roles = db.session.scalars(select(Role).order_by(Role.name))
    return [("", _("Everyone (global list)"))] + [
        (str(r.id), _("Role: %(name)s", name=r.name)) for r in roles
    ]


def _page(
    form: NetworkForm | None = None,
    *,
    error: str | None = None,
    notice: str | None = None,
    confirm_remove: int | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    if form is None:
        form = NetworkForm(formdata=None)
        form.role.choices = _role_choices()
    networks = services.list_networks()
    ip = client_ip()
    role_id = current_user.role_id
    # Ranges whose removal would refuse this admin's own address: their forms ask first.
    locking = {
        row.id
        for row in networks
        if not services.rules_from(
            (other.cidr, other.role_id) for other in networks if other.id != row.id
        ).allows(ip, role_id)
    }
    return render(
        "security/network.html",
        "security/_network.html",
        status=status,
        form=form,
        networks=networks,
        locking=locking,
        confirm_remove=confirm_remove,
        your_ip=ip,
        allowed_now=services.ip_allowed(ip, role_id),
        network_error=error,
        network_notice=notice,
        remove_form=RemoveNetworkForm(formdata=None),
    )


def _done(message: str) -> ResponseReturnValue:
    if htmx:
        return _page(notice=message)
    flash(message, "success")
    return redirect(url_for("security.index"))


@bp.route("/", methods=["GET", "POST"])
@requires(Permission.SETTINGS_MANAGE)
def index() -> ResponseReturnValue:
    if request.method == "GET":
        return _page()
    form = NetworkForm()
    form.role.choices = _role_choices()
    if not form.validate():
        return _page(form, status=422)
    role = db.session.get(Role, int(form.role.data)) if form.role.data else None
    try:
        network = services.parse_network(form.cidr.data or "")
    except services.NetworkError as exc:
        form.cidr.errors = [*form.cidr.errors, str(exc)]
        return _page(form, status=422)
    role_id = role.id if role is not None else None
    after = services.rules_after_add(str(network), role_id)
    if not after.allows(client_ip(), current_user.role_id) and not form.confirm_lockout.data:
        form.confirm_lockout.errors = [
            _(
                "Adding %(net)s would refuse your own address %(ip)s: you would be signed "
                "out at once. Tick the box to do it anyway.",
                net=str(network),
                ip=client_ip(),
            )
        ]
        return _page(form, status=422)
    try:
        services.add_network(str(network), role, form.note.data or "")
    except services.NetworkError as exc:
        db.session.rollback()
        form.cidr.errors = [*form.cidr.errors, str(exc)]
        return _page(form, status=422)
    db.session.commit()
    return _done(_("%(net)s added.", net=str(network)))


@bp.route("/<int:network_id>/delete", methods=["POST"])
@requires(Permission.SETTINGS_MANAGE)
def remove(network_id: int) -> ResponseReturnValue:
    row = db.session.get(AllowedNetwork, network_id)
    if row is None:
        return _page(error=_("That range was removed already."), status=404)
    form = RemoveNetworkForm()
    if not form.validate():
        return _page(error=_("The form expired; try again."), status=400)
    after = services.rules_after_remove(row.id)
    if not after.allows(client_ip(), current_user.role_id) and not form.confirm_lockout.data:
        return _page(
            error=_(
                "Removing %(net)s would refuse your own address %(ip)s: you would be signed "
                "out at once. Tick “I understand this locks me out” to do it anyway.",
                net=row.cidr,
                ip=client_ip(),
            ),
            confirm_remove=row.id,
            status=422,
        )
    cidr = row.cidr
    services.remove_network(row)
    db.session.commit()
    return _done(_("%(net)s removed.", net=cidr))
