"""Campaign pages: list, create/edit, preview, test send, send (with the recipient
count) or schedule, pause/resume/cancel, the progress that polls while sending; and a
stored message as the client card links to it.

Every campaign route needs `campaigns:send`. A stored message needs `clients:view` and
its client within the viewer's scope (get_client_or_404: 404 outside it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, make_response, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from crm.auth.permissions import Permission
from crm.campaigns import services
from crm.campaigns.content import ContentError
from crm.campaigns.forms import FORMAT_TEXTS, ActionForm, CampaignForm, ScheduleForm, TestSendForm
from crm.campaigns.models import Campaign, CampaignStatus, Delivery, SentMessage
from crm.campaigns.transport import Outcome
from crm.clients.policy import get_client_or_404
from crm.extensions import db
from crm.mailing.models import MailingList
from crm.org.services import organisation
from crm.search.errors import QueryError
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns", template_folder="templates")

PER_PAGE = 50
# How often the campaign page asks for progress while sending.
POLL_SECONDS = 2


def status_labels() -> dict[str, str]:
    """Translated once per request (lazy strings would look up on every use)."""
    return {
        CampaignStatus.DRAFT.value: _("Draft"),
        CampaignStatus.SCHEDULED.value: _("Scheduled"),
        CampaignStatus.SENDING.value: _("Sending"),
        CampaignStatus.PAUSED.value: _("Paused"),
        CampaignStatus.CANCELLED.value: _("Cancelled"),
        CampaignStatus.DONE.value: _("Sent"),
    }


def _campaign_or_404(campaign_id: int) -> Campaign:
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        abort(404)
    return campaign


def _list_names(campaign: Campaign) -> list[str]:
    if not campaign.list_ids:
        return []
    return list(
        db.session.scalars(
            select(MailingList.name)
            .where(MailingList.id.in_(campaign.list_ids))
            .order_by(MailingList.name)
        )
    )


@bp.route("/")
@requires(Permission.CAMPAIGNS_SEND)
def index() -> ResponseReturnValue:
    campaigns = db.session.scalars(
        select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(PER_PAGE)
    ).all()
    ids = [c.id for c in campaigns]
    counts: dict[int, dict[str, int]] = {}
    if ids:
        for campaign_id, status, n in db.session.execute(
            select(Delivery.campaign_id, Delivery.status, func.count())
            .where(Delivery.campaign_id.in_(ids))
            .group_by(Delivery.campaign_id, Delivery.status)
        ):
            counts.setdefault(campaign_id, {})[status] = n
    return render(
        "campaigns/index.html", campaigns=campaigns, counts=counts, labels=status_labels()
    )


def _save(form: CampaignForm, campaign: Campaign | None) -> Campaign | None:
    """Validate the form and the template; None (with errors on the form) if refused."""
    if not form.validate_on_submit():
        return None
    spec = form.spec()
    problems = services.check_spec(spec, current_user)
    for name, message in problems.items():
        getattr(form, name).errors = [*getattr(form, name).errors, message]
    if problems:
        return None
    if campaign is None:
        return services.create_campaign(spec, current_user)
    services.update_campaign(campaign, spec, current_user)
    return campaign


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.CAMPAIGNS_SEND)
def new() -> ResponseReturnValue:
    form = CampaignForm()
    form.fill_choices(current_user)
    if request.method == "GET":
        form.sender_email.data = _default_sender()
        form.sender_name.data = organisation().name
    campaign = _save(form, None)
    if campaign is not None:
        db.session.commit()
        flash(_("Campaign saved as a draft."), "success")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    status = 422 if request.method == "POST" else 200
    return render("campaigns/form.html", form=form, campaign=None, status=status)


def _default_sender() -> str:
    from email.utils import parseaddr

    from flask import current_app

    return parseaddr(current_app.config.get("CRM_MAIL_FROM") or "")[1]


@bp.route("/<int:campaign_id>/edit", methods=["GET", "POST"])
@requires(Permission.CAMPAIGNS_SEND)
def edit(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign_or_404(campaign_id)
    if not campaign.is_editable:
        flash(_("Only a draft or scheduled campaign can be changed."), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    form = CampaignForm(obj=campaign)
    form.fill_choices(current_user)
    if _save(form, campaign) is not None:
        db.session.commit()
        flash(_("Saved."), "success")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    status = 422 if request.method == "POST" else 200
    return render("campaigns/form.html", form=form, campaign=campaign, status=status)


def _page_context(campaign: Campaign) -> dict[str, Any]:
    return {
        "campaign": campaign,
        "stats": services.campaign_stats(campaign.id),
        "labels": status_labels(),
        "format_label": str(FORMAT_TEXTS.get(campaign.body_format, campaign.body_format)),
        "list_names": _list_names(campaign),
        "poll_seconds": POLL_SECONDS,
        "action_form": ActionForm(),
        "test_form": TestSendForm(to=current_user.email),
    }


@bp.route("/<int:campaign_id>")
@requires(Permission.CAMPAIGNS_SEND)
def show(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign_or_404(campaign_id)
    return render("campaigns/show.html", **_page_context(campaign))


@bp.route("/<int:campaign_id>/progress")
@requires(Permission.CAMPAIGNS_SEND)
def progress(campaign_id: int) -> ResponseReturnValue:
    """The progress block alone (htmx polls it while the campaign is sending; the block
    it returns stops polling once the campaign is no longer sending)."""
    campaign = _campaign_or_404(campaign_id)
    response = render("campaigns/_progress.html", **_page_context(campaign))
    if campaign.status != CampaignStatus.SENDING:
        # The actions depend on the status: reload the page once, when sending stops.
        response.headers["HX-Refresh"] = "true"
    return response


@bp.route("/<int:campaign_id>/preview")
@requires(Permission.CAMPAIGNS_SEND)
def preview(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign_or_404(campaign_id)
    try:
        rendered, sample = services.render_preview(campaign, current_user)
    except ContentError as error:
        flash(_("This template cannot be used: %(error)s", error=str(error)), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    return render("campaigns/preview.html", campaign=campaign, rendered=rendered, sample=sample)


@bp.route("/<int:campaign_id>/test", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def test_send(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign_or_404(campaign_id)
    form = TestSendForm()
    if not form.validate_on_submit():
        context = _page_context(campaign)
        context["test_form"] = form
        return render("campaigns/show.html", status=422, **context)
    try:
        result = services.send_test(campaign, form.to.data, current_user)
    except ContentError as error:
        flash(_("This template cannot be used: %(error)s", error=str(error)), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    db.session.commit()
    if result.outcome is Outcome.SENT:
        flash(_("Test message sent to %(to)s.", to=form.to.data), "success")
    else:
        flash(_("The test message was not sent: %(answer)s", answer=result.answer), "error")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id))


@bp.route("/<int:campaign_id>/send", methods=["GET", "POST"])
@requires(Permission.CAMPAIGNS_SEND)
def send(campaign_id: int) -> ResponseReturnValue:
    """GET: the confirmation with the recipient count (and scheduling); POST: send now."""
    campaign = _campaign_or_404(campaign_id)
    form = ActionForm()
    schedule_form = ScheduleForm(formdata=None)
    if not campaign.is_editable:
        flash(_("This campaign is already being sent or was sent."), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    problems = services.check_spec(services._spec_of(campaign), current_user)
    try:
        recipients = services.count_audience(campaign, current_user) if not problems else 0
    except QueryError as error:
        problems = {"saved_filter_id": error.message}
        recipients = 0
    if request.method == "POST" and form.validate_on_submit() and not problems:
        try:
            services.take_write_lock_fresh()
            campaign = _campaign_or_404(campaign_id)
            count = services.start_sending(campaign, current_user)
        except services.CampaignError as error:
            db.session.rollback()
            flash(str(error), "error")
            return redirect(url_for("campaigns.show", campaign_id=campaign_id))
        db.session.commit()
        flash(_("Sending to %(n)s recipients has started.", n=count), "success")
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    status = 422 if request.method == "POST" else 200
    return render(
        "campaigns/send.html",
        campaign=campaign,
        recipients=recipients,
        problems=list(problems.values()),
        form=form,
        schedule_form=schedule_form,
        list_names=_list_names(campaign),
        status=status,
    )


@bp.route("/<int:campaign_id>/schedule", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def schedule(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign_or_404(campaign_id)
    form = ScheduleForm()
    when = form.utc(organisation().timezone) if form.validate_on_submit() else None
    if when is not None and when <= datetime.now(UTC):
        form.scheduled_at.errors = [_("Choose a time in the future.")]
        when = None
    if when is None:
        return render(
            "campaigns/send.html",
            campaign=campaign,
            recipients=None,
            problems=[],
            form=ActionForm(),
            schedule_form=form,
            list_names=_list_names(campaign),
            status=422,
        )
    try:
        services.schedule(campaign, when, current_user)
    except services.CampaignError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    db.session.commit()
    flash(_("The campaign is scheduled."), "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


def _action(campaign_id: int, change: Any, done: str) -> ResponseReturnValue:
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    _campaign_or_404(campaign_id)
    # Workers commit all the time: on SQLite this write must come first in its
    # transaction (see services.take_write_lock).
    services.take_write_lock_fresh()
    try:
        change(_campaign_or_404(campaign_id), current_user)
    except services.CampaignError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    db.session.commit()
    flash(done, "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


@bp.route("/<int:campaign_id>/pause", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def pause(campaign_id: int) -> ResponseReturnValue:
    return _action(campaign_id, services.pause, _("The campaign is paused."))


@bp.route("/<int:campaign_id>/resume", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def resume(campaign_id: int) -> ResponseReturnValue:
    return _action(campaign_id, services.resume, _("Sending goes on."))


@bp.route("/<int:campaign_id>/cancel", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def cancel(campaign_id: int) -> ResponseReturnValue:
    return _action(campaign_id, services.cancel, _("The campaign is cancelled."))


@bp.route("/<int:campaign_id>/unschedule", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def unschedule(campaign_id: int) -> ResponseReturnValue:
    return _action(campaign_id, services.unschedule, _("The campaign is a draft again."))


@bp.route("/<int:campaign_id>/delete", methods=["POST"])
@requires(Permission.CAMPAIGNS_SEND)
def delete(campaign_id: int) -> ResponseReturnValue:
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    campaign = _campaign_or_404(campaign_id)
    try:
        services.delete_draft(campaign, current_user)
    except services.CampaignError as error:
        flash(str(error), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    db.session.commit()
    flash(_("The draft is deleted."), "success")
    return redirect(url_for("campaigns.index"))


# --- stored messages (the client card's "Emails") --------------------------------------------


def _message_or_404(message_id: int) -> SentMessage:
    message = db.session.get(SentMessage, message_id)
    if message is None:
        abort(404)
    get_client_or_404(current_user, message.client_id)  # the viewer's scope
    return message


@bp.route("/messages/<int:message_id>")
@requires(Permission.CLIENTS_VIEW)
def message(message_id: int) -> ResponseReturnValue:
    from email import policy
    from email.parser import BytesParser

    stored = _message_or_404(message_id)
    parsed = BytesParser(policy=policy.default).parsebytes(stored.eml())
    text_part = parsed.get_body(("plain",))
    text = text_part.get_content() if text_part is not None else ""
    return render("campaigns/message.html", stored=stored, text=text)


@bp.route("/messages/<int:message_id>.eml")
@requires(Permission.CLIENTS_VIEW)
def message_eml(message_id: int) -> ResponseReturnValue:
    stored = _message_or_404(message_id)
    response = make_response(stored.eml())
    response.headers["Content-Type"] = "message/rfc822"
    response.headers["Content-Disposition"] = f'attachment; filename="message-{stored.id}.eml"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
