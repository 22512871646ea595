"""Data-subject requests: the register, the client card's privacy section, exports,
restriction and erasure.

Sections of this module: register, card section, export, restriction and erasure.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import StringField, TextAreaField

from crm.auth.permissions import Permission
from crm.clients.listing import search_condition
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404, visible_clients
from crm.extensions import db, htmx
from crm.privacy import services as register
from crm.privacy.erasure import (
    ErasureError,
    check_request,
    confirmation_matches,
    describe_counts,
    erase_client,
    erasure_counts,
)
from crm.privacy.forms import CloseForm, ExtendForm, RequestForm, display_labels
from crm.privacy.models import DataRequest, RequestKind
from crm.privacy.restriction import (
    REASON_LIMIT,
    RestrictionError,
    guard_restricted_edits,
    lift,
)
from crm.privacy.restriction import restrict as restrict_client
from crm.privacy.services import RequestError, RequestSpec, StatusFilter
from crm.web.access import requires
from crm.web.pagination import page_number, paginate
from crm.web.render import htmx_redirect, render
from crm.web.urls import safe_next

bp = Blueprint("privacy", __name__, template_folder="templates")

# --- register --------------------------------------------------------------------------

CLIENT_OPTIONS = 10


@bp.app_context_processor
def _register_helpers() -> dict[str, Any]:
    # Callables, so pages without requests pay nothing.
    return {"request_labels": display_labels, "request_urgency": register.urgency}


def get_request_or_404(request_id: int) -> DataRequest:
    """The request, or 404 when it does not exist or concerns a client outside the
    user's scope (404, not 403, so ids cannot be probed)."""
    data_request = register.get_request(current_user, request_id)
    if data_request is None:
        abort(404)
    return data_request


def _spec(form: RequestForm) -> RequestSpec:
    return RequestSpec(
        kind=form.kind.data or "",
        channel=form.channel.data or "",
        received_on=form.received_on.data,  # type: ignore[arg-type]
        requester=form.requester.data or "",
        client=form.client,
        details=form.details.data or "",
        identity_check=form.identity_check.data or "",
        assignee_id=form.assignee,
    )


def _place_error(form: Any, error: RequestError) -> None:
    """A refusal from the service, next to its field (or above the form)."""
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = [*field.errors, error.message]
    else:
        form.form_errors.append(error.message)


@bp.route("/privacy/requests")
@requires(Permission.REQUESTS_MANAGE)
def requests() -> ResponseReturnValue:
    status = request.args.get("status", StatusFilter.OPEN)
    if status not in StatusFilter.VALUES:
        status = StatusFilter.OPEN
    kind = request.args.get("kind") or None
    if kind not in {k.value for k in RequestKind}:
        kind = None
    today = register.org_date()
    page = paginate(
        register.register_query(current_user, status=status, kind=kind, today=today),
        page_number(),
        register.REGISTER_PAGE,
    )
    return render(
        "privacy/requests.html",
        "privacy/_requests_table.html",
        results=page,
        # Not `status`: render() takes that as the HTTP status.
        view=status,
        kind=kind,
        counts=register.register_counts(current_user, today),
        today=today,
    )


@bp.route("/privacy/requests/new", methods=["GET", "POST"])
@requires(Permission.REQUESTS_MANAGE)
def new_request() -> ResponseReturnValue:
    form = RequestForm(user=current_user)
    today = register.org_date()
    if request.method == "GET":
        form.received_on.data = today
        form.assignee_id.data = str(current_user.id)
        raw = request.args.get("client_id", "")
        if raw:
            if not raw.isdigit():
                abort(404)
            form.client = get_client_or_404(current_user, int(raw))
            form.client_id.data = str(form.client.id)
        kind = request.args.get("kind", "")
        if kind in {k.value for k in RequestKind}:
            form.kind.data = kind
    if form.validate_on_submit():
        try:
            data_request = register.create_request(_spec(form), by=current_user, today=today)
        except RequestError as error:
            db.session.rollback()
            _place_error(form, error)
        else:
            db.session.commit()
            flash(
                _(
                    "Request #%(number)s registered; the answer is due on %(date)s.",
                    number=data_request.id,
                    date=register.format_day(data_request.due_on),
                ),
                "success",
            )
            return redirect(url_for("privacy.request", request_id=data_request.id))
    return render(
        "privacy/request_form.html",
        form=form,
        data_request=None,
        next=safe_next(request.values.get("next")),
    )


@bp.route("/privacy/requests/clients")
@requires(Permission.REQUESTS_MANAGE)
def client_options() -> ResponseReturnValue:
    """Clients matching a quick search, as choices for the request form."""
    q = request.args.get("q", "")[:200]
    condition = search_condition(q)
    clients: list[Client] = []
    if condition is not None:
        stmt = (
            select(Client)
            .where(visible_clients(current_user), condition)
            .order_by(Client.last_name, Client.first_name, Client.id)
            .limit(CLIENT_OPTIONS)
        )
        clients = list(db.session.scalars(stmt))
    return render("privacy/_client_options.html", clients=clients, q=q, chosen=None)


def _request_page(data_request: DataRequest, **forms: Any) -> ResponseReturnValue:
    today = register.org_date()
    context: dict[str, Any] = {
        "data_request": data_request,
        "client": data_request.client,
        "today": today,
        "latest_extension": register.latest_extension(data_request.due_on),
        "extend_form": forms.get("extend_form") or ExtendForm(formdata=None),
        "close_form": forms.get("close_form") or CloseForm(formdata=None),
        "changes": register.changes_under_request(data_request)
        if data_request.kind == RequestKind.RECTIFICATION.value
        else [],
        "change_labels": register.change_labels()
        if data_request.kind == RequestKind.RECTIFICATION.value
        else {},
        "rectifying": data_request.client_id is not None
        and register.rectification_request_id(data_request.client_id) == data_request.id,
        "deadline_tasks": register.deadline_tasks(data_request.id),
        "closed_late": data_request.closed_at is not None
        and register.org_date(data_request.closed_at) > data_request.deadline,
    }
    return render("privacy/request.html", **context)


# The endpoint is "privacy.request"; the function has another name so that it does
# not hide flask.request in this module.
@bp.route("/privacy/requests/<int:request_id>", endpoint="request")
@requires(Permission.REQUESTS_MANAGE)
def show_request(request_id: int) -> ResponseReturnValue:
    return _request_page(get_request_or_404(request_id))


@bp.route("/privacy/requests/<int:request_id>/edit", methods=["GET", "POST"])
@requires(Permission.REQUESTS_MANAGE)
def edit_request(request_id: int) -> ResponseReturnValue:
    data_request = get_request_or_404(request_id)
    if not data_request.is_open:
        flash(_("This request is closed; its record can no longer change."), "error")
        return redirect(url_for("privacy.request", request_id=data_request.id))
    form = RequestForm(obj=data_request, user=current_user, keep_assignee=data_request.assignee_id)
    if request.method == "GET":
        form.assignee_id.data = str(data_request.assignee_id or "")
        form.client = data_request.client
        form.client_id.data = str(data_request.client_id or "")
    if form.validate_on_submit():
        try:
            changed = register.update_request(
                data_request, _spec(form), by=current_user, today=register.org_date()
            )
        except RequestError as error:
            db.session.rollback()
            data_request = get_request_or_404(request_id)
            _place_error(form, error)
        else:
            db.session.commit()
            flash(_("Request saved.") if changed else _("Nothing changed."), "success")
            return redirect(url_for("privacy.request", request_id=data_request.id))
    return render(
        "privacy/request_form.html",
        form=form,
        data_request=data_request,
        next=safe_next(request.values.get("next")),
    )


@bp.route("/privacy/requests/<int:request_id>/extend", methods=["POST"])
@requires(Permission.REQUESTS_MANAGE)
def extend_request(request_id: int) -> ResponseReturnValue:
    data_request = get_request_or_404(request_id)
    if not data_request.is_open:
        # The page shows no form for a closed request: say why above it.
        flash(_("This request is closed already."), "error")
        return redirect(url_for("privacy.request", request_id=data_request.id))
    form = ExtendForm()
    if form.validate_on_submit():
        try:
            register.extend_request(
                data_request,
                until=form.until.data,
                reason=form.reason.data or "",
                by=current_user,
                today=register.org_date(),
            )
        except RequestError as error:
            db.session.rollback()
            data_request = get_request_or_404(request_id)
            _place_error(form, error)
        else:
            db.session.commit()
            flash(
                _(
                    "Deadline extended to %(date)s. Tell the requester, with the reason.",
                    date=register.format_day(data_request.deadline),
                ),
                "success",
            )
            return redirect(url_for("privacy.request", request_id=data_request.id))
    return _request_page(data_request, extend_form=form)


@bp.route("/privacy/requests/<int:request_id>/close", methods=["POST"])
@requires(Permission.REQUESTS_MANAGE)
def close_request(request_id: int) -> ResponseReturnValue:
    data_request = get_request_or_404(request_id)
    if not data_request.is_open:
        # The page shows no form for a closed request: say why above it.
        flash(_("This request is closed already."), "error")
        return redirect(url_for("privacy.request", request_id=data_request.id))
    form = CloseForm()
    if form.validate_on_submit():
        try:
            register.close_request(
                data_request,
                status=form.status.data or "",
                outcome=form.outcome.data or "",
                by=current_user,
            )
        except RequestError as error:
            db.session.rollback()
            data_request = get_request_or_404(request_id)
            _place_error(form, error)
        else:
            if data_request.client_id is not None:
                register.finish_rectification(data_request.client_id)
            db.session.commit()
            flash(_("Request #%(number)s closed.", number=data_request.id), "success")
            page = url_for("privacy.request", request_id=data_request.id)
            # The form posts through htmx (for its confirmation) when JavaScript runs.
            return htmx_redirect(page) if htmx else redirect(page)
    return _request_page(data_request, close_form=form)


@bp.route("/privacy/requests/<int:request_id>/rectification", methods=["POST"])
@requires(Permission.REQUESTS_MANAGE, Permission.CLIENTS_EDIT)
def start_rectification(request_id: int) -> ResponseReturnValue:
    """Edit the card under this request: until "Finish", every change of the card
    made by this user is linked to the request in the audit log."""
    data_request = get_request_or_404(request_id)
    try:
        register.start_rectification(data_request)
    except RequestError as error:
        flash(error.message, "error")
        return redirect(url_for("privacy.request", request_id=data_request.id))
    return redirect(url_for("clients.card", client_id=data_request.client_id))


@bp.route("/clients/<int:client_id>/rectification/finish", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def finish_rectification(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    request_id = register.finish_rectification(client.id)
    if request_id is not None and register.get_request(current_user, request_id) is not None:
        flash(_("Changes to the card are no longer recorded under the request."), "success")
        return redirect(url_for("privacy.request", request_id=request_id))
    return redirect(url_for("clients.card", client_id=client.id))


# --- card section ----------------------------------------------------------------------


@bp.route("/clients/<int:client_id>/privacy")
@requires(Permission.CLIENTS_VIEW)
def card_section(client_id: int) -> ResponseReturnValue:
    """The card's privacy section, loaded after the card (htmx) so the card itself
    pays nothing for it: restriction state, the client's requests, and the places
    where the export and the erasure add their buttons."""
    client = get_client_or_404(current_user, client_id)
    can_manage = current_user.can(Permission.REQUESTS_MANAGE)
    found = register.card_requests(client.id) if can_manage else register.CardRequests([], [])
    return render(
        "privacy/card_section.html",
        "privacy/_card.html",
        client=client,
        open_requests=found.open,
        recent_requests=found.recent,
        today=register.org_date(),
    )


# --- export ----------------------------------------------------------------------------

# How often the export status polls while the export is being built.
EXPORT_POLL_SECONDS = 1


def _client_exports(client_id: int) -> list[Any]:
    """The current user's latest exports of this client (the card and request pages)."""
    from crm.privacy.export import recent_exports

    if not current_user.is_authenticated or not current_user.can(Permission.CLIENTS_EXPORT):
        return []
    return recent_exports(client_id, current_user.id)


@bp.app_context_processor
def _export_helpers() -> dict[str, Any]:
    # Callables and constants only, so pages that show no export pay nothing.
    from crm.privacy.export import download_days
    from crm.sqltypes import utcnow

    return {
        "client_exports": _client_exports,
        "export_download_days": download_days,
        "export_poll_seconds": EXPORT_POLL_SECONDS,
        "export_now": utcnow,
    }


def _export_or_404(export_id: int) -> Any:
    """The export, to the user who asked for it only, and only while its client is in
    their scope (404 otherwise, so ids cannot be probed)."""
    from crm.privacy.models import DataExport

    export = db.session.get(DataExport, export_id)
    if export is None or export.requested_by_id != current_user.id:
        abort(404)
    get_client_or_404(current_user, export.client_id)
    return export


@bp.route("/clients/<int:client_id>/exports", methods=["POST"])
@requires(Permission.CLIENTS_VIEW, Permission.CLIENTS_EXPORT)
def start_export(client_id: int) -> ResponseReturnValue:
    """Start building an export of this client (optionally under a request of the
    register); the worker builds it, the page polls its progress."""
    from crm.extensions import htmx
    from crm.privacy import export as exports
    from crm.privacy.tasks import build_export
    from crm.queue import enqueue_after_commit

    client = get_client_or_404(current_user, client_id)
    data_request = None
    raw = (request.form.get("request_id") or "").strip()
    if raw:
        if not current_user.can(Permission.REQUESTS_MANAGE):
            abort(403)
        found = register.get_request(current_user, int(raw)) if raw.isdigit() else None
        if found is None or found.client_id != client.id:
            abort(400, description=_("That request is not in the register for this client."))
        data_request = found
    running = exports.active_export(client.id, current_user.id)
    if running is not None:
        message = _("An export of this client is already being built.")
    else:
        export = exports.start_export(
            client, current_user, data_request.id if data_request else None
        )
        enqueue_after_commit(build_export, export.id)
        message = _("Export started. It is ready to download in a moment.")
    db.session.commit()
    if htmx:
        template = "privacy/_request_export.html" if data_request else "privacy/_card_export.html"
        return render(template, template, client=client, data_request=data_request, note=message)
    flash(message, "success")
    if data_request is not None:
        return redirect(url_for("privacy.request", request_id=data_request.id))
    return redirect(url_for("clients.card", client_id=client.id))


@bp.route("/exports/<int:export_id>")
@requires(Permission.CLIENTS_VIEW, Permission.CLIENTS_EXPORT)
def export_status(export_id: int) -> ResponseReturnValue:
    """One export: a progress bar while it is built (htmx polls this every second),
    then its size and the download button, or what went wrong."""
    export = _export_or_404(export_id)
    return render("privacy/export.html", "privacy/_export_status.html", export=export)


@bp.route("/exports/<int:export_id>/download")
@requires(Permission.CLIENTS_VIEW, Permission.CLIENTS_EXPORT)
def download_export(export_id: int) -> ResponseReturnValue:
    """The zip, to the user who asked for it, until it expires. Audited."""
    from flask import send_file

    from crm.audit.services import record
    from crm.privacy import export as exports
    from crm.privacy.models import ExportStatus
    from crm.sqltypes import utcnow

    export = _export_or_404(export_id)
    if export.status == ExportStatus.EXPIRED.value or (
        export.status == ExportStatus.DONE.value and not export.is_downloadable(utcnow())
    ):
        abort(
            410,
            description=_(
                "This download has expired and its file was removed. Start a new export "
                "from the client's card."
            ),
        )
    if export.status != ExportStatus.DONE.value:
        abort(409, description=_("This export is not ready to download (yet)."))
    path = exports.export_path(export)
    if path is None:
        abort(
            410,
            description=_("The file of this export is no longer on the server. Export again."),
        )
    record(
        "privacy.export_downloaded",
        target_type="data_export",
        target_id=export.id,
        client_id=export.client_id,
        details={"size": export.size, "request_id": export.request_id},
    )
    db.session.commit()
    response = send_file(
        path,
        mimetype=exports.ZIP_MIMETYPE,
        as_attachment=True,
        download_name=exports.download_name(export.client, export.finished_at),
        max_age=0,
    )
    # Personal data: never kept by a shared cache or the browser's.
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- restriction and erasure -----------------------------------------------------------
# Restricting and lifting is answering a data-subject right (GDPR Art. 18), as the
# register is: requests:manage (admin, manager). Erasure needs clients:erase (admin).
# Both work on any client within the user's scope, restricted or not.


class RestrictForm(FlaskForm):
    reason = TextAreaField(
        _l("Why is processing restricted?"),
        description=_l(
            "Shown on the card, e.g. “Accuracy contested, request of 2 December” "
            "(GDPR Art. 18(1)(a)-(d))."
        ),
        render_kw={"rows": 3, "maxlength": REASON_LIMIT},
    )


class LiftForm(FlaskForm):
    pass


class EraseForm(FlaskForm):
    confirmation = StringField(
        _l("Type the client's name to confirm"),
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )


def _under_request(client: Client, kind: RequestKind) -> DataRequest | None:
    """The open request of `kind` about `client` named by `request_id` (404 otherwise)."""
    raw = request.values.get("request_id", "")
    if not raw:
        return None
    if not raw.isdigit():
        abort(404)
    data_request = get_request_or_404(int(raw))
    if data_request.client_id != client.id or data_request.kind != kind.value:
        abort(404)
    return data_request


@bp.route("/clients/<int:client_id>/restriction", methods=["GET", "POST"])
@requires(Permission.REQUESTS_MANAGE)
def restrict(client_id: int) -> ResponseReturnValue:
    """GET: the form (restrict with a reason, or lift). POST: do it."""
    client = get_client_or_404(current_user, client_id)
    data_request = _under_request(client, RequestKind.RESTRICTION)
    restricted = client.restricted_at is not None
    form: FlaskForm = LiftForm() if restricted else RestrictForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            request_id = data_request.id if data_request else None
            try:
                if restricted:
                    lift(client, current_user, request_id=request_id)
                else:
                    restrict_client(
                        client, form.reason.data or "", current_user, request_id=request_id
                    )
            except RestrictionError as error:
                if not restricted:
                    form.reason.errors = [str(error)]
                else:
                    flash(str(error), "error")
                status = 422
            else:
                db.session.commit()
                if restricted:
                    flash(_("The restriction is lifted: the client is used again."), "success")
                else:
                    flash(
                        _("Processing is restricted: the client is kept but not used."),
                        "success",
                    )
                if data_request is not None:
                    return redirect(url_for("privacy.request", request_id=data_request.id))
                return redirect(url_for("clients.card", client_id=client.id))
        else:
            status = 422
    return render(
        "privacy/restrict.html",
        client=client,
        form=form,
        data_request=data_request,
        restricted=restricted,
        status=status,
    )


@bp.route("/clients/<int:client_id>/erase", methods=["GET", "POST"])
@requires(Permission.CLIENTS_ERASE)
def erase(client_id: int) -> ResponseReturnValue:
    """GET: what erasure removes and keeps, and the confirmation. POST: erase, when the
    client's name was typed; then to the request (closed as done) or the list."""
    client = get_client_or_404(current_user, client_id)
    data_request = _under_request(client, RequestKind.ERASURE)
    form = EraseForm()
    status = 200
    problem = None
    if data_request is not None:
        try:
            check_request(client, data_request.id)
        except ErasureError as error:
            problem = str(error)
    if request.method == "POST":
        status = 422
        if problem is None and form.validate_on_submit():
            if not confirmation_matches(client, form.confirmation.data or ""):
                form.confirmation.errors = [
                    _("Type the name exactly as shown: %(name)s", name=client.display_name)
                ]
            else:
                result = erase_client(
                    client,
                    current_user,
                    request_id=data_request.id if data_request else None,
                )
                db.session.commit()
                result.after_commit()
                flash(
                    _(
                        "The client was erased (erasure record %(id)s). Their email "
                        "address and phone number are kept only as keyed hashes on the "
                        "suppression list.",
                        id=result.erasure.id,
                    ),
                    "success",
                )
                if data_request is not None:
                    target = url_for("privacy.request", request_id=data_request.id)
                else:
                    target = url_for("clients.index")
                return htmx_redirect(target)
    counts = erasure_counts(client)
    return render(
        "privacy/erase.html",
        client=client,
        form=form,
        data_request=data_request,
        problem=problem,
        removed=describe_counts(counts),
        requests_kept=counts.get("requests_kept", 0),
        status=status,
    )


# Refuses (409, shown by the app's error pages) every edit route of a restricted client.
bp.before_app_request(guard_restricted_edits)
