"""The pipeline, the deal form, quick stage changes, and the stage settings.

A quick stage change answers htmx with the piece of page it came from, named by the
`view` argument: `card` (the card's deal section) or `pipeline` (the board or the
stage list, with the same filters); without htmx it redirects back.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm.auth.permissions import Permission
from crm.clients.listing import search_condition
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404, visible_clients
from crm.deals import services
from crm.deals.forms import KIND_LABELS, DealForm, StageForm
from crm.deals.models import DealStage, StageKind
from crm.deals.policy import get_deal_or_404
from crm.deals.services import StageError
from crm.extensions import db, htmx
from crm.org.services import organisation
from crm.tasks.services import org_today
from crm.web.access import requires
from crm.web.pagination import page_number, paginate
from crm.web.render import htmx_redirect, render
from crm.web.urls import next_url, safe_next

bp = Blueprint("deals", __name__, url_prefix="/deals", template_folder="templates")

CLIENT_OPTIONS = 10


@bp.app_context_processor
def _deal_helpers() -> dict[str, Any]:
    # A callable, so pages without a stage select never query the stages; templates
    # call it once and hand the list to the stage_select macro.
    return {"deal_stages": services.stage_list, "stage_kinds": KIND_LABELS}


def _int_arg(name: str) -> int | None:
    raw = request.values.get(name, "")
    return int(raw) if raw.isdigit() else None


# --- the pipeline --------------------------------------------------------------------------


def _pipeline_context(stage_id: int | None, mine: bool, page_no: int) -> dict[str, Any]:
    owner_id = current_user.id if mine else None
    open_stages, closed = services.board(current_user, owner_id)
    summaries = open_stages + closed
    context: dict[str, Any] = {
        "open_stages": open_stages,
        "closed_stages": closed,
        "open_totals": services.totals(open_stages),
        "deal_total": sum(s.count for s in summaries),
        "mine": mine,
        "stage": None,
        "results": None,
        "today": org_today(),
    }
    if stage_id is not None:
        current = next((s for s in summaries if s.stage.id == stage_id), None)
        if current is None:
            abort(404)
        context["stage"] = current
        context["results"] = paginate(
            services.stage_deals_query(current_user, stage_id, owner_id),
            page_no,
            services.DEAL_PAGE,
        )
    return context


@bp.route("/")
@requires(Permission.DEALS_VIEW)
def pipeline() -> ResponseReturnValue:
    context = _pipeline_context(_int_arg("stage"), request.args.get("mine") == "1", page_number())
    return render("deals/pipeline.html", "deals/_pipeline.html", **context)


# --- one deal ------------------------------------------------------------------------------


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.DEALS_EDIT)
def create() -> ResponseReturnValue:
    fixed = None
    if request.method == "GET" and request.args.get("client_id"):
        raw = request.args["client_id"]
        if not raw.isdigit():
            abort(404)
        fixed = get_client_or_404(current_user, int(raw))
    form = DealForm(user=current_user)
    if request.method == "GET":
        form.currency.data = organisation().default_currency
        form.owner_id.data = str(current_user.id)
        open_stage = next(
            (s for s in services.all_stages() if s.kind == StageKind.OPEN.value), None
        )
        if open_stage is not None:
            form.stage_id.data = str(open_stage.id)
        if fixed is not None:
            form.client_id.data = str(fixed.id)
            form.client = fixed
    if form.validate_on_submit() and form.client is not None:
        deal = services.create_deal(
            title=form.title.data or "",
            client_id=form.client.id,
            stage_id=int(form.stage_id.data),
            currency=form.currency.data or "",
            amount=form.parsed_amount,
            expected_close=form.expected_close.data,
            owner_id=form.owner,
        )
        db.session.commit()
        flash(_("Deal “%(title)s” created.", title=deal.title), "success")
        return redirect(next_url(url_for("clients.card", client_id=deal.client_id)))
    return render(
        "deals/form.html", form=form, deal=None, next=safe_next(request.values.get("next"))
    )


@bp.route("/<int:deal_id>/edit", methods=["GET", "POST"])
@requires(Permission.DEALS_EDIT)
def edit(deal_id: int) -> ResponseReturnValue:
    deal = get_deal_or_404(current_user, deal_id)
    form = DealForm(
        obj=deal,
        user=current_user,
        fixed_client=deal.client,
        keep_currency=deal.currency,
        keep_owner=deal.owner_id,
    )
    if request.method == "GET":
        form.amount.data = "" if deal.amount is None else f"{deal.amount:.2f}"
        form.stage_id.data = str(deal.stage_id)
        form.owner_id.data = str(deal.owner_id or "")
    if form.validate_on_submit():
        services.update_deal(
            deal,
            title=form.title.data or "",
            stage_id=int(form.stage_id.data),
            currency=form.currency.data or "",
            amount=form.parsed_amount,
            expected_close=form.expected_close.data,
            owner_id=form.owner,
        )
        db.session.commit()
        flash(_("Deal “%(title)s” saved.", title=deal.title), "success")
        return redirect(next_url(url_for("clients.card", client_id=deal.client_id)))
    return render(
        "deals/form.html", form=form, deal=deal, next=safe_next(request.values.get("next"))
    )


@bp.route("/<int:deal_id>/stage", methods=["POST"])
@requires(Permission.DEALS_EDIT)
def change_stage(deal_id: int) -> ResponseReturnValue:
    deal = get_deal_or_404(current_user, deal_id)
    stage_id = _int_arg("stage_id")
    stage = db.session.get(DealStage, stage_id) if stage_id is not None else None
    if stage is None:
        abort(400)
    services.set_stage(deal, stage)
    db.session.commit()
    notice = _("“%(title)s” moved to %(stage)s.", title=deal.title, stage=stage.name)
    view = request.values.get("view")
    if htmx and view == "card":
        return _client_section(deal.client)
    if htmx and view == "pipeline":
        context = _pipeline_context(
            _int_arg("stage"), request.values.get("mine") == "1", _int_arg("page") or 1
        )
        return render("deals/_pipeline.html", notice=notice, **context)
    flash(notice, "success")
    return redirect(next_url(url_for("deals.pipeline")))


def _client_section(client: Client) -> ResponseReturnValue:
    return render("deals/_client_deals.html", client=client, deals=services.client_deals(client.id))


@bp.route("/<int:deal_id>/delete", methods=["POST"])
@requires(Permission.DEALS_EDIT)
def delete(deal_id: int) -> ResponseReturnValue:
    deal = get_deal_or_404(current_user, deal_id)
    title, client_id = deal.title, deal.client_id
    services.delete_deal(deal)
    db.session.commit()
    flash(_("Deal “%(title)s” deleted.", title=title), "success")
    return htmx_redirect(next_url(url_for("clients.card", client_id=client_id)))


@bp.route("/clients")
@requires(Permission.DEALS_EDIT)
def client_options() -> ResponseReturnValue:
    """Clients matching a quick search, as radio buttons for the deal form."""
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
    return render("deals/_client_options.html", clients=clients, q=q, chosen=None)


# --- stage settings ------------------------------------------------------------------------


def _stages_page(
    add_form: StageForm | None = None,
    error: str | None = None,
    notice: str | None = None,
    row_values: dict[int, dict[str, str]] | None = None,
) -> ResponseReturnValue:
    return render(
        "deals/stages.html",
        "deals/_stages.html",
        stages=services.all_stages(),
        usage=services.stage_usage(),
        add_form=add_form or StageForm(formdata=None),
        stage_error=error,
        stage_notice=notice,
        row_values=row_values or {},
    )


def _stage_done(notice: str) -> ResponseReturnValue:
    if htmx:
        return _stages_page(notice=notice)
    flash(notice, "success")
    return redirect(url_for("deals.stages"))


def _stage_refused(
    message: str,
    row_values: dict[int, dict[str, str]] | None = None,
) -> ResponseReturnValue:
    db.session.rollback()
    if htmx:
        return _stages_page(error=message, row_values=row_values)
    flash(message, "error")
    return redirect(url_for("deals.stages"))


def _get_stage(stage_id: int) -> DealStage:
    stage = db.session.get(DealStage, stage_id)
    if stage is None:
        abort(404)
    return stage


@bp.route("/stages", methods=["GET", "POST"])
@requires(Permission.SETTINGS_MANAGE)
def stages() -> ResponseReturnValue:
    form = StageForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            stage = services.create_stage(form.name.data or "", form.kind.data or "open")
        except StageError as exc:
            db.session.rollback()
            form.name.errors = [*form.name.errors, str(exc)]
        else:
            db.session.commit()
            return _stage_done(_("Stage “%(name)s” added.", name=stage.name))
    return _stages_page(add_form=form if request.method == "POST" else None)


@bp.route("/stages/<int:stage_id>", methods=["POST"])
@requires(Permission.SETTINGS_MANAGE)
def update_stage(stage_id: int) -> ResponseReturnValue:
    stage = _get_stage(stage_id)
    form = StageForm()
    typed = {stage.id: {"name": request.form.get("name", ""), "kind": request.form.get("kind", "")}}
    if not form.validate_on_submit():
        errors = [str(e) for errs in form.errors.values() for e in errs]
        return _stage_refused(" ".join(errors), typed)
    try:
        services.update_stage(stage, form.name.data or "", form.kind.data or "open")
    except StageError as exc:
        return _stage_refused(str(exc), typed)
    db.session.commit()
    return _stage_done(_("Stage “%(name)s” saved.", name=stage.name))


@bp.route("/stages/<int:stage_id>/move", methods=["POST"])
@requires(Permission.SETTINGS_MANAGE)
def move_stage(stage_id: int) -> ResponseReturnValue:
    stage = _get_stage(stage_id)
    services.move_stage(stage, -1 if request.form.get("direction") == "up" else 1)
    db.session.commit()
    if htmx:
        return _stages_page()
    return redirect(url_for("deals.stages"))


@bp.route("/stages/<int:stage_id>/delete", methods=["POST"])
@requires(Permission.SETTINGS_MANAGE)
def delete_stage(stage_id: int) -> ResponseReturnValue:
    stage = _get_stage(stage_id)
    name = stage.name
    try:
        services.delete_stage(stage)
    except StageError as exc:
        return _stage_refused(str(exc))
    db.session.commit()
    return _stage_done(_("Stage “%(name)s” deleted.", name=name))
