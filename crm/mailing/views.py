"""Mailing lists: admin pages (groups, lists, subscribers, CSV import), the client
card's list section, and the public confirmation and unsubscribe pages.

Card routes look the client up with get_client_or_404 (outside the scope: 404) and
answer htmx with the section body (#lists-body). Public routes take a signed token;
GET never changes anything (link scanners), POST acts.
"""

from __future__ import annotations

import csv
from typing import Any

from flask import Blueprint, abort, flash, make_response, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user

from crm.auth.permissions import Permission
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404
from crm.consents.forms import ConfirmForm
from crm.consents.services import Evidence
from crm.extensions import csrf, db, htmx
from crm.mailing import importer, mass, services
from crm.mailing.forms import (
    OPT_IN_TEXTS,
    STATUS_TEXTS,
    GroupForm,
    ImportMappingForm,
    ImportUploadForm,
    ListForm,
)
from crm.mailing.models import (
    EventSource,
    ListGroup,
    MailingList,
    OptIn,
    Subscription,
    SubscriptionStatus,
)
from crm.mailing.services import LinkError, MailingError
from crm.web.access import public, requires
from crm.web.pagination import page_number, paginate
from crm.web.render import htmx_redirect, render

bp = Blueprint("mailing", __name__, template_folder="templates")
mass.register()  # "Add to a mailing list" on the client list

SUBSCRIBERS_PER_PAGE = 50
ONE_CLICK = ("List-Unsubscribe", "One-Click")


def status_labels() -> dict[str, str]:
    """Translated once per call: lazy strings look the catalogue up on every use."""
    return {k: _(v) for k, v in STATUS_TEXTS.items()}


@bp.app_context_processor
def _labels() -> dict[str, Any]:
    return {"mailing_status_labels": status_labels}


# --- admin: groups and lists -----------------------------------------------------------


def _get_list(list_id: int) -> MailingList:
    found = db.session.get(MailingList, list_id)
    if found is None:
        abort(404)
    return found


def _get_group(group_id: int) -> ListGroup:
    found = db.session.get(ListGroup, group_id)
    if found is None:
        abort(404)
    return found


@bp.route("/admin/lists/")
@requires(Permission.LISTS_MANAGE)
def index() -> ResponseReturnValue:
    return render(
        "mailing/lists.html",
        lists=services.all_lists(),
        groups=services.all_groups(),
        counts=services.list_counts(),
        labels=status_labels(),
        opt_in_labels={k: _(v) for k, v in OPT_IN_TEXTS.items()},
        form=ConfirmForm(),
    )


def _list_spec(form: ListForm) -> services.ListSpec:
    return services.ListSpec(
        name=form.name.data or "",
        description=form.description.data or "",
        group_id=int(form.group_id.data) if form.group_id.data else None,
        opt_in=OptIn(form.opt_in.data or OptIn.SINGLE.value),
        purpose_id=int(form.purpose_id.data or 0),
    )


@bp.route("/admin/lists/new", methods=["GET", "POST"])
@requires(Permission.LISTS_MANAGE)
def create_list() -> ResponseReturnValue:
    form = ListForm()
    if form.validate_on_submit():
        try:
            mlist = services.create_list(_list_spec(form), current_user)
        except MailingError as exc:
            db.session.rollback()
            form.name.errors = [str(exc)]
        else:
            db.session.commit()
            flash(_("List “%(name)s” added.", name=mlist.name), "success")
            return redirect(url_for("mailing.index"))
    return render("mailing/list_form.html", form=form, mlist=None)


@bp.route("/admin/lists/<int:list_id>", methods=["GET", "POST"])
@requires(Permission.LISTS_MANAGE)
def edit_list(list_id: int) -> ResponseReturnValue:
    mlist = _get_list(list_id)
    form = ListForm(obj=mlist)
    if request.method == "GET":
        form.group_id.data = str(mlist.group_id or "")
        form.purpose_id.data = str(mlist.purpose_id)
    if form.validate_on_submit():
        try:
            services.update_list(mlist, _list_spec(form), current_user)
        except MailingError as exc:
            db.session.rollback()
            form.name.errors = [str(exc)]
        else:
            db.session.commit()
            flash(_("List “%(name)s” saved.", name=mlist.name), "success")
            return redirect(url_for("mailing.index"))
    return render("mailing/list_form.html", form=form, mlist=mlist)


@bp.route("/admin/lists/<int:list_id>/archive", methods=["POST"])
@requires(Permission.LISTS_MANAGE)
def archive_list(list_id: int) -> ResponseReturnValue:
    mlist = _get_list(list_id)
    if ConfirmForm().validate_on_submit():
        archived = request.form.get("restore") != "1"
        services.set_list_archived(mlist, archived, current_user)
        db.session.commit()
        message = _("List “%(name)s” archived.") if archived else _("List “%(name)s” restored.")
        flash(message % {"name": mlist.name}, "success")
    return htmx_redirect(url_for("mailing.index"))


@bp.route("/admin/lists/groups/new", methods=["GET", "POST"])
@requires(Permission.LISTS_MANAGE)
def create_group() -> ResponseReturnValue:
    form = GroupForm()
    if form.validate_on_submit():
        try:
            group = services.create_group(
                form.name.data or "", form.description.data or "", current_user
            )
        except MailingError as exc:
            db.session.rollback()
            form.name.errors = [str(exc)]
        else:
            db.session.commit()
            flash(_("Group “%(name)s” added.", name=group.name), "success")
            return redirect(url_for("mailing.index"))
    return render("mailing/group_form.html", form=form, group=None)


@bp.route("/admin/lists/groups/<int:group_id>", methods=["GET", "POST"])
@requires(Permission.LISTS_MANAGE)
def edit_group(group_id: int) -> ResponseReturnValue:
    group = _get_group(group_id)
    form = GroupForm(obj=group)
    if form.validate_on_submit():
        try:
            services.update_group(
                group, form.name.data or "", form.description.data or "", current_user
            )
        except MailingError as exc:
            db.session.rollback()
            form.name.errors = [str(exc)]
        else:
            db.session.commit()
            flash(_("Group “%(name)s” saved.", name=group.name), "success")
            return redirect(url_for("mailing.index"))
    return render("mailing/group_form.html", form=form, group=group)


@bp.route("/admin/lists/groups/<int:group_id>/archive", methods=["POST"])
@requires(Permission.LISTS_MANAGE)
def archive_group(group_id: int) -> ResponseReturnValue:
    group = _get_group(group_id)
    if ConfirmForm().validate_on_submit():
        archived = request.form.get("restore") != "1"
        services.set_group_archived(group, archived, current_user)
        db.session.commit()
        message = _("Group “%(name)s” archived.") if archived else _("Group “%(name)s” restored.")
        flash(message % {"name": group.name}, "success")
    return htmx_redirect(url_for("mailing.index"))


@bp.route("/admin/lists/<int:list_id>/subscribers")
@requires(Permission.LISTS_MANAGE)
def subscribers(list_id: int) -> ResponseReturnValue:
    mlist = _get_list(list_id)
    status = request.args.get("status") or None
    if status not in {s.value for s in SubscriptionStatus}:
        status = None
    stmt = services.subscribers_stmt(mlist.id, status)
    page = paginate(stmt, page_number(), SUBSCRIBERS_PER_PAGE)
    # paginate() takes scalars (the Subscription); the client comes by the same id.
    clients = {
        c.id: c
        for c in db.session.scalars(
            db.select(Client).where(Client.id.in_([s.client_id for s in page.items]))
        )
    }
    return render(
        "mailing/subscribers.html",
        mlist=mlist,
        subscribers=page,
        clients=clients,
        status=status,
        labels=status_labels(),
        counts=services.list_counts().get(mlist.id, {}),
    )


# --- admin: CSV import -----------------------------------------------------------------

TARGET_TEXTS = {
    "first_name": "First name",
    "last_name": "Last name",
    "company": "Company",
    "email": "Email",
    "phone": "Phone",
    "street": "Street",
    "postal_code": "Postal code",
    "city": "City",
    "country": "Country",
}


def _targets() -> list[tuple[str, str]]:
    from crm.fields.services import active_fields

    return (
        [("", _("— ignore —"))]
        + [(k, _(v)) for k, v in TARGET_TEXTS.items()]
        + [(f"cf:{f.key}", f.label) for f in active_fields()]
    )


@bp.route("/admin/lists/import", methods=["GET", "POST"])
@requires(Permission.LISTS_MANAGE)
def import_upload() -> ResponseReturnValue:
    form = ImportUploadForm()
    if form.validate_on_submit():
        key = importer.store_upload(form.file.data.read())
        return redirect(url_for("mailing.import_map", key=key))
    return render("mailing/import_upload.html", form=form, status=422 if form.errors else 200)


def _preview(key: str) -> tuple[list[str], list[list[str]]]:
    path = importer.upload_path(key)
    if path is None:
        abort(404)
    with importer.open_text(path) as stream:
        header, reader = importer.read_csv(stream)
        try:
            rows = [row for _n, row in zip(range(5), reader, strict=False)]
        except (csv.Error, UnicodeDecodeError):
            rows = []  # the import itself names the row
    return header, rows


@bp.route("/admin/lists/import/<key>", methods=["GET", "POST"])
@requires(Permission.LISTS_MANAGE)
def import_map(key: str) -> ResponseReturnValue:
    from crm.fields.services import active_fields

    error = None
    try:
        header, preview = _preview(key)
    except importer.ImportFailed as exc:
        flash(str(exc), "error")
        return redirect(url_for("mailing.import_upload"))
    form = ImportMappingForm(upload=key)
    if request.method == "GET":
        form.basis.data = "consent"
    mapping = [request.form.get(f"map_{i}", "") for i in range(len(header))]
    if request.method == "GET":
        mapping = importer.guess_mapping(header, active_fields())
    if form.validate_on_submit():
        path = importer.upload_path(key)
        if path is None:
            abort(404)
        try:
            with importer.open_text(path) as stream:
                result = importer.import_clients(
                    stream,
                    form.list_name.data or "",
                    form.basis.data or "",
                    method=form.method.data or "import",
                    mapping=mapping,
                    by=current_user,
                    source_name=f"upload {key[:8]}",
                )
        except (importer.ImportFailed, MailingError) as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
            if result.errors:
                report = importer.import_dir() / f"{key}.errors.csv"
                report.write_text(importer.error_report(result.errors), encoding="utf-8")
            path.unlink(missing_ok=True)
            return render("mailing/import_done.html", result=result, key=key)
    return render(
        "mailing/import_map.html",
        form=form,
        header=header,
        preview=preview,
        mapping=mapping,
        targets=_targets(),
        lists=[m for m in services.all_lists() if not m.is_archived],
        error=error,
        status=422 if (error or form.errors) else 200,
    )


@bp.route("/admin/lists/import/<key>/errors.csv")
@requires(Permission.LISTS_MANAGE)
def import_errors(key: str) -> ResponseReturnValue:
    path = importer.upload_path(key, ".errors.csv")
    if path is None:
        abort(404)
    response = make_response(path.read_bytes())
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = "attachment; filename=import-errors.csv"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# --- the client card -------------------------------------------------------------------


def _section(
    client: Client, notice: str | None = None, error: str | None = None, status: int = 200
) -> ResponseReturnValue:
    if not htmx:
        if notice:
            flash(notice, "success")
        if error:
            flash(error, "error")
        return redirect(url_for("clients.card", client_id=client.id) + "#lists")
    return render(
        "mailing/section.html",
        "mailing/_card_body.html",
        status=status,
        client=client,
        mailing=services.card_section(client.id),
        mailing_notice=notice,
        mailing_error=error,
    )


@bp.route("/clients/<int:client_id>/lists")
@requires(Permission.CLIENTS_VIEW)
def card_lists(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    return render(
        "mailing/section.html",
        "mailing/_card_body.html",
        client=client,
        mailing=services.card_section(client.id),
    )


@bp.route("/clients/<int:client_id>/lists/subscribe", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def card_subscribe(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    if not ConfirmForm().validate_on_submit():
        return _section(client, error=_("The form expired; try again."), status=422)
    raw = request.form.get("list_id", "")
    mlist = db.session.get(MailingList, int(raw)) if raw.isdigit() else None
    if mlist is None:
        return _section(client, error=_("Pick a list."), status=422)
    try:
        sub = services.subscribe(
            client,
            mlist,
            source=EventSource.STAFF,
            actor=current_user,
            evidence=Evidence.from_request(),
        )
    except MailingError as exc:
        db.session.rollback()
        return _section(client, error=str(exc), status=422)
    db.session.commit()
    if sub.status == SubscriptionStatus.UNCONFIRMED.value:
        message = _(
            "Confirmation email for “%(list)s” sent to %(email)s.",
            list=mlist.name,
            email=client.email,
        )
    else:
        message = _("Subscribed to “%(list)s”.", list=mlist.name)
    return _section(client, notice=message)


@bp.route("/clients/<int:client_id>/lists/<int:list_id>/unsubscribe", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def card_unsubscribe(client_id: int, list_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    if not ConfirmForm().validate_on_submit():
        return _section(client, error=_("The form expired; try again."), status=422)
    sub = services.get_subscription(client.id, list_id)
    if sub is None:
        abort(404)
    services.unsubscribe(
        sub, source=EventSource.STAFF, actor=current_user, evidence=Evidence.from_request()
    )
    db.session.commit()
    return _section(client, notice=_("Unsubscribed from “%(list)s”.", list=sub.mailing_list.name))


@bp.route("/clients/<int:client_id>/lists/unsubscribe-all", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def card_unsubscribe_all(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    if not ConfirmForm().validate_on_submit():
        return _section(client, error=_("The form expired; try again."), status=422)
    services.unsubscribe_all(
        client, source=EventSource.STAFF, actor=current_user, evidence=Evidence.from_request()
    )
    db.session.commit()
    return _section(
        client, notice=_("Unsubscribed from every list; the address is no longer mailed.")
    )


# --- public pages ----------------------------------------------------------------------


def _public_evidence() -> Evidence:
    evidence = Evidence.from_request()
    # The page, not the token: the link is a credential and stays out of the record.
    evidence.source_url = request.host_url.rstrip("/") + request.path.rsplit("/", 1)[0]
    return evidence


def _link_error(reason: str) -> ResponseReturnValue:
    messages = {
        "invalid": _(
            "This link is not valid. It may be incomplete or changed: use the link from "
            "the email exactly as it was sent."
        ),
        "expired": _("This confirmation link has expired. Subscribe again to get a new one."),
        "void": _(
            "This confirmation link no longer applies: a newer one was sent, or the "
            "subscription ended."
        ),
    }
    return render("mailing/link_error.html", status=400, message=messages[reason])


@bp.route("/lists/confirm/<token>", methods=["GET", "POST"])
@public
def confirm(token: str) -> ResponseReturnValue:
    """GET shows the list and a button; POST confirms (once)."""
    try:
        sub, already = services.confirmation_subscription(token)
    except LinkError as exc:
        return _link_error(exc.reason)
    form = ConfirmForm()
    if already:
        return render("mailing/confirmed.html", mlist=sub.mailing_list, already=True)
    if request.method == "POST":
        if not form.validate_on_submit():
            return render(
                "mailing/confirm.html", mlist=sub.mailing_list, form=form, expired=True, status=400
            )
        try:
            services.confirm(sub, _public_evidence())
        except (LinkError, MailingError):
            db.session.rollback()
            return _link_error("void")
        db.session.commit()
        return render("mailing/confirmed.html", mlist=sub.mailing_list, already=False)
    return render("mailing/confirm.html", mlist=sub.mailing_list, form=form, expired=False)


def _is_one_click() -> bool:
    """RFC 8058: the mail client POSTs exactly `List-Unsubscribe=One-Click`."""
    form = request.form
    return list(form.keys()) == [ONE_CLICK[0]] and form.get(ONE_CLICK[0]) == ONE_CLICK[1]


@bp.route("/lists/u/<token>", methods=["GET", "POST"])
@public
@csrf.exempt
def unsubscribe(token: str) -> ResponseReturnValue:
    """The preferences page of one subscription. GET changes nothing. POST acts: the
    one-click body (no cookie, no CSRF token: the signed token is the guard) only
    unsubscribes; the page's own form (CSRF-checked) unsubscribes, switches to another
    list of the same group or re-subscribes."""
    try:
        sub, campaign_id = services.unsubscribe_subscription(token)
    except LinkError as exc:
        return _link_error(exc.reason)
    mlist = sub.mailing_list
    notice = error = None
    if request.method == "POST" and _is_one_click():
        services.unsubscribe(
            sub, source=EventSource.ONE_CLICK, evidence=_public_evidence(), campaign_id=campaign_id
        )
        db.session.commit()
        return make_response(_("You are unsubscribed."), 200, {"Content-Type": "text/plain"})
    form = ConfirmForm()
    # The route is exempt from the global CSRF check for the one-click body only; the
    # page's own buttons carry the form's token, checked here.
    if request.method == "POST" and not form.validate_on_submit():
        error = _("The page expired; press the button again.")
    elif request.method == "POST":
        action = request.form.get("action", "")
        evidence = _public_evidence()
        try:
            if action == "unsubscribe":
                services.unsubscribe(
                    sub, source=EventSource.PAGE, evidence=evidence, campaign_id=campaign_id
                )
                notice = _("You are unsubscribed from “%(list)s”.", list=mlist.name)
            elif action == "resubscribe":
                client = db.session.get(Client, sub.client_id)
                assert client is not None
                services.subscribe(client, mlist, source=EventSource.PAGE, evidence=evidence)
                notice = _("You are subscribed to “%(list)s” again.", list=mlist.name)
            elif action == "switch":
                raw = request.form.get("target", "")
                target = db.session.get(MailingList, int(raw)) if raw.isdigit() else None
                if target is None:
                    raise MailingError(_("You can only switch to another list of the same group."))
                services.switch(sub, target, evidence=evidence, campaign_id=campaign_id)
                notice = _("You now receive “%(list)s” instead.", list=target.name)
            else:
                abort(400)
        except MailingError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
    targets = services.switch_targets(mlist)
    subscribed = {
        s.list_id: s.status
        for s in db.session.scalars(
            db.select(Subscription).where(
                Subscription.client_id == sub.client_id,
                Subscription.list_id.in_([mlist.id] + [t.id for t in targets]),
            )
        )
    }
    return render(
        "mailing/unsubscribe.html",
        status=400 if error else 200,
        mlist=mlist,
        status_now=subscribed.get(mlist.id, sub.status),
        targets=targets,
        subscribed=subscribed,
        notice=notice,
        error=error,
        form=form,
    )
