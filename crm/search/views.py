"""The filter builder, saved filters and mass actions of the client list.

Everything here is driven by htmx from the client list page (crm/clients/templates/
clients/index.html) and degrades to whole pages without it. The builder changes
nothing on the server: it turns its form into a query and shows the list for it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm.audit.services import record as audit
from crm.auth.permissions import Permission
from crm.clients import listing
from crm.clients.models import Tag
from crm.clients.views import list_context
from crm.extensions import db, htmx
from crm.fields.services import active_fields
from crm.privacy import restriction
from crm.search import builder, mass
from crm.search.errors import QueryError
from crm.search.fields import Catalog
from crm.search.forms import DeleteFilterForm, RenameFilterForm, SaveFilterForm, ShareFilterForm
from crm.search.parser import MAX_LENGTH as MAX_QUERY_LENGTH
from crm.search.policy import get_filter_or_404, get_filter_to_change
from crm.search.services import (
    FilterError,
    builder_context,
    create_filter,
    delete_filter,
    filter_count,
    parse_query,
    query_text,
    rename_filter,
    share_filter,
    sidebar_context,
)
from crm.web.access import requires
from crm.web.render import htmx_redirect, render

bp = Blueprint("search", __name__, url_prefix="/search", template_folder="templates")

LIST_ARGS = ("q", "sort", "dir", "columns")


def _list_args(values: Any) -> dict[str, str]:
    """The client list's URL parameters found in `values` (blank ones left out)."""
    return {k: str(values.get(k)) for k in LIST_ARGS if values.get(k)}


def _page_q() -> str:
    """The query of the page an htmx request comes from (to mark the active filter)."""
    if not htmx or not htmx.current_url:
        return request.args.get("q", "")
    return parse_qs(urlsplit(htmx.current_url).query).get("q", [""])[0]


# --- the filter builder -----------------------------------------------------------------


@bp.route("/builder", methods=["POST"])
@requires(Permission.CLIENTS_VIEW)
def builder_update() -> ResponseReturnValue:
    """One step of the builder: read its state, apply the button pressed (if any), and
    when the query it describes changed, show the new text and the list for it."""
    catalog = Catalog.build()
    root = builder.from_form(request.form, catalog)
    builder.apply_action(root, request.form.get("action", ""))
    node = builder.to_tree(root, catalog)
    before = request.form.get("synced", "")
    marker = builder.synced_marker(node)
    # An empty builder next to a query it could not show leaves that query alone.
    keep_text = before == builder.TEXT_ONLY and node is None
    changed = not keep_text and marker != before
    q = query_text(node, catalog) if changed else request.form.get("base_q", "")
    view = builder.BuilderView(
        root,
        builder.TEXT_ONLY if keep_text else marker,
        notice=_("The search box keeps its query until a condition here is complete.")
        if keep_text
        else None,
    )
    args = _list_args(request.form) | {"q": q}
    if not q:
        args.pop("q")
    context = list_context(args, catalog) | builder_context(view, catalog)
    if not htmx:
        return render("clients/index.html", **context, **sidebar_context(current_user, catalog, q))
    response = make_response(
        render_template("search/_builder_response.html", sync=changed, **context)
    )
    if changed:
        # The address follows the query, so the search stays bookmarkable.
        response.headers["HX-Push-Url"] = url_for("clients.index", **args)
    response.vary.add("HX-Request")
    return response


# --- saved filters ----------------------------------------------------------------------


def _sidebar(
    *,
    notice: str | None = None,
    editing: int | None = None,
    confirming: int | None = None,
    rename_form: RenameFilterForm | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    catalog = Catalog.build()
    return render(
        "search/filters.html",
        "search/_filters.html",
        status=status,
        notice=notice,
        editing=editing,
        confirming=confirming,
        rename_form=rename_form,
        **sidebar_context(current_user, catalog, _page_q()),
    )


def _done(message: str) -> ResponseReturnValue:
    if htmx:
        return _sidebar(notice=message)
    flash(message, "success")
    return redirect(url_for("clients.index"))


@bp.route("/filters")
@requires(Permission.CLIENTS_VIEW)
def filters() -> ResponseReturnValue:
    return _sidebar()


def _save_form_page(form: SaveFilterForm, status: int, error: str | None = None) -> Any:
    return render(
        "search/save.html",
        "search/_save_form.html",
        status=status,
        save_form=form,
        save_error=error,
        save_open=True,
    )


@bp.route("/filters", methods=["POST"])
@requires(Permission.CLIENTS_VIEW)
def save_filter() -> ResponseReturnValue:
    """Save the list's current search (query, sort, columns) under a name."""
    form = SaveFilterForm()
    if not form.validate_on_submit():
        return _save_form_page(form, 422)
    catalog = Catalog.build()
    q = (form.q.data or "")[: MAX_QUERY_LENGTH + 1]
    try:
        node = parse_query(q, catalog)
    except QueryError as error:
        message = _("Fix the search before saving it: %(error)s", error=error.message)
        return _save_form_page(form, 422, message)
    fields = active_fields()
    known = {c.key for c in listing.available_columns(fields)}
    columns = [k for k in (form.columns.data or "").split(",") if k in known]
    if not form.columns.data:
        chosen = current_user.preferences.get("client_columns")
        columns = [c.key for c in listing.chosen_columns(chosen, fields)]
    sort, _exprs, _nullable = listing.resolve_sort(form.sort.data or "name", fields)
    try:
        saved = create_filter(
            current_user,
            form.name.data or "",
            shared=bool(form.shared.data),
            node=node,
            text=query_text(node, catalog),
            columns=columns,
            sort=sort,
            desc=form.dir.data == "desc",
        )
    except FilterError as error:
        db.session.rollback()
        form.name.errors = [*form.name.errors, str(error)]
        return _save_form_page(form, 422)
    db.session.commit()
    message = _("Search saved as “%(name)s”.", name=saved.name)
    if not htmx:
        flash(message, "success")
        return redirect(url_for("clients.index", **_list_args(request.form)))
    # The form closes again (its list state stays), and the sidebar shows the filter.
    fresh = SaveFilterForm(formdata=None, q=form.q.data, sort=form.sort.data)
    fresh.dir.data, fresh.columns.data = form.dir.data, form.columns.data
    body = render_template("search/_save_form.html", save_form=fresh, save_notice=message)
    body += render_template(
        "search/_filters.html",
        oob=True,
        notice=None,
        editing=None,
        confirming=None,
        rename_form=None,
        **sidebar_context(current_user, catalog, q),
    )
    response = make_response(body)
    response.vary.add("HX-Request")
    return response


@bp.route("/filters/<int:filter_id>/count")
@requires(Permission.CLIENTS_VIEW)
def filter_count_view(filter_id: int) -> ResponseReturnValue:
    """A saved filter's live count (loaded lazily by the sidebar), within the user's
    scope and capped like the list's."""
    saved = get_filter_or_404(current_user, filter_id)
    try:
        total = filter_count(current_user, saved, Catalog.build(), listing.COUNT_CAP)
    except QueryError as error:
        return render("search/_filter_count.html", saved=saved, error=error.message)
    return render(
        "search/_filter_count.html",
        saved=saved,
        error=None,
        total=min(total, listing.COUNT_CAP),
        capped=total > listing.COUNT_CAP,
    )


@bp.route("/filters/<int:filter_id>/rename", methods=["GET", "POST"])
@requires(Permission.CLIENTS_VIEW)
def rename(filter_id: int) -> ResponseReturnValue:
    saved = get_filter_to_change(current_user, filter_id)
    if request.method == "GET":
        return _sidebar(editing=saved.id, rename_form=RenameFilterForm(formdata=None, obj=saved))
    form = RenameFilterForm()
    if form.validate_on_submit():
        try:
            rename_filter(saved, form.name.data or "")
        except FilterError as error:
            db.session.rollback()
            form.name.errors = [*form.name.errors, str(error)]
        else:
            db.session.commit()
            return _done(_("Filter renamed to “%(name)s”.", name=saved.name))
    return _sidebar(editing=filter_id, rename_form=form, status=422)


@bp.route("/filters/<int:filter_id>/share", methods=["POST"])
@requires(Permission.CLIENTS_VIEW)
def share(filter_id: int) -> ResponseReturnValue:
    saved = get_filter_to_change(current_user, filter_id)
    form = ShareFilterForm()
    if not form.validate_on_submit():
        abort(400)
    share_filter(saved, form.shared.data == "1")
    db.session.commit()
    if saved.shared:
        return _done(_("“%(name)s” is shared with everyone.", name=saved.name))
    return _done(_("“%(name)s” is private again.", name=saved.name))


@bp.route("/filters/<int:filter_id>/delete", methods=["GET", "POST"])
@requires(Permission.CLIENTS_VIEW)
def delete(filter_id: int) -> ResponseReturnValue:
    saved = get_filter_to_change(current_user, filter_id)
    if request.method == "GET":
        return _sidebar(confirming=saved.id)
    form = DeleteFilterForm()
    if not form.validate_on_submit():
        abort(400)
    name = saved.name
    delete_filter(saved)
    db.session.commit()
    return _done(_("Filter “%(name)s” deleted.", name=name))


# --- mass actions ------------------------------------------------------------------------


def _mass_panel(
    action: mass.MassAction | None,
    selection: mass.Selection,
    *,
    form: Any = None,
    selected: int = 0,
    message: str | None = None,
    status: int = 200,
    left_out: int = 0,
) -> ResponseReturnValue:
    return render(
        "search/mass.html",
        "search/_mass.html",
        status=status,
        action=action,
        selection=selection,
        form=form,
        selected=selected,
        message=message,
        left_out_message=restriction.left_out_message(left_out) if left_out else "",
        back=_list_args(request.values),
        tag_names=_tag_names() if action is not None and action.key == "tag_add" else [],
    )


def _tag_names() -> list[str]:
    return list(db.session.scalars(select(Tag.name).order_by(Tag.name).limit(500)))


def _mass_action() -> mass.MassAction | None:
    key = request.values.get("action", "")
    action = mass.MASS_ACTIONS.get(key)
    if action is not None and not action.allowed(current_user):
        abort(403)
    return action


@bp.route("/mass", methods=["GET", "POST"])
@requires(Permission.CLIENTS_VIEW)
def mass_action() -> ResponseReturnValue:
    """GET: the confirmation (how many clients, and the action's inputs). POST: do it,
    set-based and within the user's scope, audited as one entry."""
    action = _mass_action()
    selection = mass.selection_from(request.values)
    if action is None:
        return _mass_panel(None, selection, message=_("Choose what to do with them."))
    if selection.empty:
        message = _("Tick clients in the list first, or choose all that match.")
        return _mass_panel(action, selection, message=message)
    catalog = Catalog.build()
    try:
        condition = selection.condition(current_user, catalog)
    except QueryError as error:
        return _mass_panel(action, selection, message=error.message)
    left_out = 0
    if action.run is not None:
        # A change leaves restricted clients (GDPR Art. 18) as they are.
        left_out = restriction.count_restricted(condition)
        condition = restriction.unrestricted(condition)
    selected = mass.count_selected(condition)
    if request.method == "GET":
        form = action.form(formdata=None) if action.form else None
        return _mass_panel(action, selection, form=form, selected=selected, left_out=left_out)
    if action.run is None or action.form is None:
        abort(400)  # a download: its confirmation links to the file
    form = action.form()
    if not form.validate_on_submit():
        return _mass_panel(
            action, selection, form=form, selected=selected, status=422, left_out=left_out
        )
    if selected == 0:
        return _mass_panel(action, selection, message=_("None of the selected clients is left."))
    changed, details, message = action.run(current_user, condition, form)
    if left_out:
        details = {**details, "restricted_left_out": left_out}
        message = f"{message} {restriction.left_out_message(left_out)}"
    audit(
        action.audit_action,
        details={"count": changed, "selected": selected, **selection.audit_details(), **details},
    )
    db.session.commit()
    flash(message, "success")
    return htmx_redirect(url_for("clients.index", **_list_args(request.form)))
