from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import flag_modified

from crm.attachments.services import client_attachments, remove_stored_files
from crm.audit.services import changes_details
from crm.audit.services import record as audit
from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.campaigns.services import client_messages
from crm.clients import export as export_files
from crm.clients import listing
from crm.clients.forms import CORE_GROUPS, client_form
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404
from crm.clients.services import TEXT_INPUTS, apply_form, create_client, delete_client
from crm.consents.services import consent_panel
from crm.deals.services import client_deals
from crm.extensions import db, htmx
from crm.fields.models import CustomField
from crm.fields.services import active_fields
from crm.fields.values import display, form_value
from crm.mailing.services import card_section as mailing_card_section
from crm.notes.services import NOTE_PAGE, timeline_page
from crm.org.services import organisation
from crm.privacy.services import under_request
from crm.search import builder
from crm.search.errors import QueryError
from crm.search.fields import Catalog
from crm.search.mass import actions_for, selection_from
from crm.search.parser import MAX_LENGTH as MAX_QUERY_LENGTH
from crm.search.services import builder_context, query_condition, sidebar_context
from crm.tasks.services import open_tasks_for_client
from crm.web.access import requires
from crm.web.render import htmx_redirect, render

bp = Blueprint("clients", __name__, url_prefix="/clients", template_folder="templates")


def _list_request(args: Mapping[str, str]) -> listing.ListRequest:
    return listing.ListRequest(
        # One character over the limit is kept so the parser says "too long" rather
        # than a cut query meaning something else.
        q=args.get("q", "")[: MAX_QUERY_LENGTH + 1],
        sort=args.get("sort", "name"),
        desc=args.get("dir") == "desc",
        after=args.get("after") or None,
        # "last=1" pages backwards from the end: the last page without counting rows.
        before=args.get("before") or ("" if args.get("last") else None),
    )


def _list_columns(
    args: Mapping[str, str], fields: list[CustomField]
) -> tuple[list[listing.Column], str | None]:
    """The list's columns: `columns` in the URL (a saved filter's) wins over the user's
    own choice. Returns the columns and the URL parameter to keep (None: the user's)."""
    raw = args.get("columns") or ""
    if raw:
        chosen = listing.chosen_columns([k for k in raw.split(",")[:100] if k], fields)
        return chosen, ",".join(c.key for c in chosen)
    return listing.chosen_columns(current_user.preferences.get("client_columns"), fields), None


def list_context(args: Mapping[str, str], catalog: Catalog | None = None) -> dict[str, Any]:
    """What clients/_list.html needs for the list these URL parameters ask for (the
    list page, and the filter builder, which refreshes the list as it changes)."""
    fields = active_fields()
    columns, columns_param = _list_columns(args, fields)
    list_request = _list_request(args)
    query_error = None
    try:
        # `q` is the query language (plain words are the quick search); it becomes the
        # list's `where`, and listing's own word search is not used on top of it.
        where = query_condition(list_request.q, catalog)
    except QueryError as error:
        query_error = error
    if query_error is None:
        result = listing.list_clients(
            current_user, replace(list_request, q=""), fields, columns, where=where
        )
    else:
        # A bad query shows its error above an empty list, with 200: nothing ran.
        sort, _exprs, _nullable = listing.resolve_sort(list_request.sort, fields)
        result = listing.ListResult(
            clients=[],
            count=0,
            count_capped=False,
            next_cursor=None,
            prev_cursor=None,
            sort=sort,
            desc=list_request.desc,
            columns=columns,
        )
    return {
        "result": result,
        "q": list_request.q,
        "query_error": query_error,
        "all_columns": listing.available_columns(fields),
        "columns_param": columns_param,
        "mass_actions": actions_for(current_user),
        "display": display,
    }


@bp.route("/")
@requires(Permission.CLIENTS_VIEW)
def index() -> ResponseReturnValue:
    catalog = Catalog.build()
    context = list_context(request.args, catalog)
    # Back/forward restores a pushed address (the builder and the search box push them)
    # by asking for it again: that needs the whole page, not the list alone.
    if htmx and not htmx.boosted and not htmx.history_restore_request:
        body = render_template("clients/_list.html", **context)
        if htmx.trigger == "q":
            # Typed into the search box: the filter builder follows the text.
            view = builder.from_query(context["q"], catalog)
            body += render_template(
                "search/_builder.html", oob=True, q=context["q"], **builder_context(view, catalog)
            )
        response = make_response(body)
        response.vary.add("HX-Request")
        return response
    view = builder.from_query(context["q"], catalog)
    return render(
        "clients/index.html",
        **context,
        **builder_context(view, catalog),
        **sidebar_context(current_user, catalog, context["q"]),
    )


@bp.route("/count")
@requires(Permission.CLIENTS_VIEW)
def count() -> ResponseReturnValue:
    """The number of matches: with `cap=list`, the list's own count (up to COUNT_CAP,
    then "more than 1,000" and "count all"), which PostgreSQL loads after the rows;
    otherwise "count all": exact up to EXACT_COUNT_CAP, "more than 10,000" beyond."""
    list_count = request.args.get("cap") == "list"
    q = request.args.get("q", "")[: MAX_QUERY_LENGTH + 1]
    try:
        where = query_condition(q)
    except QueryError as error:
        return render("clients/_count.html", total=None, capped=False, query_error=error)
    cap = listing.COUNT_CAP if list_count else listing.EXACT_COUNT_CAP
    total = listing.count_clients(current_user, "", where, cap=cap)
    return render(
        "clients/_count.html",
        total=min(total, cap),
        capped=total > cap,
        offer_count_all=list_count,
        q=q,
        query_error=None,
    )


@bp.route("/export")
@requires(Permission.CLIENTS_VIEW, Permission.CLIENTS_EXPORT)
def export() -> ResponseReturnValue:
    """The list as a file: the same query, scope and columns as on screen, every row.
    With `ids` (rows ticked in the list): those clients, still within the scope."""
    file_format = request.args.get("format", "xlsx")
    if file_format not in export_files.FORMATS:
        abort(400)
    q = request.args.get("q", "")[: MAX_QUERY_LENGTH + 1]
    selection = selection_from(request.args) if request.args.get("ids") else None
    if selection is not None:
        # Ticked rows: base_query ANDs the scope, so forged ids reach nothing.
        where = Client.id.in_(selection.ids)
    else:
        try:
            where = query_condition(q)
        except QueryError as error:
            abort(400, description=_("The query cannot be exported: %(error)s", error=error))
    fields = active_fields()
    columns, _param = _list_columns(request.args, fields)
    total = listing.count_clients(current_user, "", where, cap=0)
    out_columns = export_files.export_columns(columns, ZoneInfo(organisation().timezone))
    audit(
        "clients.export",
        details={
            "format": file_format,
            **(selection.audit_details() if selection is not None else {"query": q}),
            "rows": total,
            "columns": [c.label for c in out_columns],
        },
    )
    db.session.commit()
    clients = export_files.iter_clients(listing.base_query(current_user, "", where))
    stamp = datetime.now(ZoneInfo(organisation().timezone)).strftime("%Y-%m-%d-%H%M")
    filename = f"clients-{stamp}.{file_format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if file_format == "csv":
        body = stream_with_context(export_files.csv_chunks(out_columns, clients))
        return Response(body, mimetype=export_files.FORMATS["csv"], headers=headers)
    data = export_files.xlsx_bytes(out_columns, clients, title=_("Clients"))
    return Response(data, mimetype=export_files.FORMATS["xlsx"], headers=headers)


@bp.route("/columns", methods=["POST"])
@requires(Permission.CLIENTS_VIEW)
def columns() -> ResponseReturnValue:
    known = {c.key for c in listing.available_columns(active_fields())}
    if request.form.get("reset"):
        current_user.preferences.pop("client_columns", None)
    else:
        chosen = [k for k in request.form.getlist("columns") if k in known]
        current_user.preferences["client_columns"] = chosen
    flag_modified(current_user, "preferences")
    db.session.commit()
    # A saved filter's `columns` in the URL is dropped, so the new choice shows.
    keep = {k: v for k, v in request.form.items() if k in ("q", "sort", "dir") and v}
    return redirect(url_for("clients.index", **keep))


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.CLIENTS_EDIT)
def create() -> ResponseReturnValue:
    fields = active_fields()
    form = client_form(fields, organisation().default_phone_region)
    if request.method == "GET":
        form.owner_id.data = str(current_user.id)
    if form.validate_on_submit():
        client = create_client(form, current_user)
        audit(
            "client.create",
            target_type="client",
            target_id=client.id,
            client_id=client.id,
            details=changes_details(_created_values(client)),
        )
        db.session.commit()
        flash(_("Client %(name)s created.", name=client.display_name), "success")
        return redirect(url_for("clients.card", client_id=client.id))
    return render("clients/form.html", form=form, client=None, fields=fields)


def _card_context(client: Client) -> dict[str, object]:
    fields = active_fields()
    notes, more_notes = timeline_page(client.id, before=None, limit=NOTE_PAGE)
    return {
        "client": client,
        "fields": fields,
        "notes": notes,
        "more_notes": more_notes,
        "attachments": client_attachments(client.id),
        "tasks": open_tasks_for_client(client.id),
        "deals": client_deals(client.id),
        # The consent section: states per purpose and the newest events, two queries.
        "consents": consent_panel(client.id),
        # The mailing list section: one query.
        "mailing": mailing_card_section(client.id),
        # The "Emails" section: one query (newest stored messages).
        "sent_messages": client_messages(client.id),
        "display": display,
    }


@bp.route("/<int:client_id>")
@requires(Permission.CLIENTS_VIEW)
def card(client_id: int) -> ResponseReturnValue:
    # Owner and tags come with the client: one round trip instead of three.
    client = get_client_or_404(
        current_user,
        client_id,
        joinedload(Client.owner).load_only(*User.display_columns()),
        joinedload(Client.tags),
    )
    # Render first, then record the view and commit: committing first would expire every
    # loaded object and reload it during rendering. The page is sent only if the audit
    # entry committed.
    response = render("clients/card.html", **_card_context(client))
    # A view is recorded on every card request: its commit need not wait for the disk.
    audit(
        "client.view",
        target_type="client",
        target_id=client.id,
        client_id=client.id,
        durable=False,
    )
    db.session.commit()
    return response


@bp.route("/<int:client_id>/edit", methods=["GET", "POST"])
@requires(Permission.CLIENTS_EDIT)
def edit(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    fields = active_fields()
    form = client_form(fields, organisation().default_phone_region, obj=client)
    if request.method == "GET":
        _fill(form, client, fields)
    if form.validate_on_submit():
        _audit_update(client, apply_form(client, form))
        db.session.commit()
        flash(_("Saved."), "success")
        return redirect(url_for("clients.card", client_id=client.id))
    return render("clients/form.html", form=form, client=client, fields=fields)


def _created_values(client: Client) -> dict[str, tuple[object, object]]:
    """A new client's filled-in values as a diff from nothing, for the audit log."""
    values: dict[str, object] = {n: getattr(client, n) for n in TEXT_INPUTS}
    values["owner_id"] = client.owner_id
    values["tags"] = sorted(t.name for t in client.tags)
    values.update({f"cf:{k}": v for k, v in (client.custom or {}).items()})
    return {k: (None, v) for k, v in values.items() if v not in (None, "", [])}


def _audit_update(client: Client, changes: dict[str, tuple[object, object]]) -> None:
    """One audit entry per save that changed something."""
    if changes:
        audit(
            "client.update",
            target_type="client",
            target_id=client.id,
            client_id=client.id,
            # Linked to the data request the card is being rectified under, if any.
            details=under_request(client.id, changes_details(changes)),
        )


def _fill(form, client: Client, fields: list[CustomField]) -> None:  # type: ignore[no-untyped-def]
    """Put the stored values into a form (for GET)."""
    if "owner_id" in form:
        form.owner_id.data = str(client.owner_id or "")
    if "tags" in form:
        form.tags.data = ", ".join(t.name for t in client.tags)
    for name in (
        "first_name",
        "last_name",
        "company",
        "email",
        "phone",
        "street",
        "postal_code",
        "city",
        "country",
    ):
        if name in form:
            form[name].data = getattr(client, name)
    for field in fields:
        name = f"cf_{field.key}"
        if name in form:
            form[name].data = form_value(field, client.custom.get(field.key))


def _group_inputs(group: str, fields: list[CustomField]) -> tuple[tuple[str, ...], str]:
    """The form inputs an inline-edit group edits, and its label; 404 if unknown."""
    if group in CORE_GROUPS:
        labels = {
            "name": _("Name"),
            "email": _("Email"),
            "phone": _("Phone"),
            "address": _("Address"),
            "owner": _("Owner"),
            "tags": _("Tags"),
        }
        return CORE_GROUPS[group], labels[group]
    for field in fields:
        if group == f"cf_{field.key}":
            return (group,), field.label
    abort(404)


@bp.route("/<int:client_id>/groups/<group>")
@requires(Permission.CLIENTS_VIEW)
def show_group(client_id: int, group: str) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    fields = active_fields()
    _group_inputs(group, fields)
    return render("clients/_group.html", client=client, group=group, fields=fields, display=display)


@bp.route("/<int:client_id>/groups/<group>/edit", methods=["GET", "POST"])
@requires(Permission.CLIENTS_EDIT)
def edit_group(client_id: int, group: str) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    fields = active_fields()
    inputs, label = _group_inputs(group, fields)
    form = client_form(fields, organisation().default_phone_region, only=inputs)
    if request.method == "GET":
        _fill(form, client, fields)
    elif form.validate_on_submit():
        _audit_update(client, apply_form(client, form))
        db.session.commit()
        return render(
            "clients/_group.html", client=client, group=group, fields=fields, display=display
        )
    # Validation errors come back with 200 so htmx swaps them in next to the inputs.
    return render("clients/_group_edit.html", client=client, group=group, form=form, label=label)


@bp.route("/<int:client_id>/delete", methods=["GET", "POST"])
@requires(Permission.CLIENTS_DELETE)
def delete(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    if request.method == "POST":
        name = client.display_name
        audit(
            "client.delete",
            target_type="client",
            target_id=client.id,
            client_id=client.id,
            details={"name": name},
        )
        storage_keys = delete_client(client)
        db.session.commit()
        remove_stored_files(storage_keys)
        flash(_("Client %(name)s and everything on their card was deleted.", name=name), "success")
        return htmx_redirect(url_for("clients.index"))
    return render("clients/delete.html", client=client)
