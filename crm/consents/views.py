"""The purposes register (admin), the consent section of the client card, and the
public page behind a renewal link.

Card routes look the client up with get_client_or_404 (outside the user's scope: 404)
and answer htmx with the whole section body (#consent-panel), so the states, the form
and the history always agree.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, flash, make_response, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import force_locale, format_date, get_timezone
from flask_babel import gettext as _
from flask_login import current_user
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from sqlalchemy import select

from crm.auth.permissions import Permission
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404
from crm.consents import services
from crm.consents.forms import (
    ACTION_LABELS,
    BASIS_LABELS,
    CHANNEL_LABELS,
    KIND_LABELS,
    ConfirmForm,
    PurposeForm,
    RecordForm,
    display_labels,
    language_name,
    purpose_form,
)
from crm.consents.models import (
    ConsentEvent,
    ConsentNotice,
    ConsentPurpose,
    ConsentState,
    EventKind,
    LegalBasis,
    Method,
    RetentionAction,
)
from crm.consents.services import ConsentError, Evidence, PurposeSpec, RenewalError
from crm.extensions import db, htmx
from crm.org.services import organisation
from crm.tasks.models import Task, TaskOrigin
from crm.web.access import public, requires
from crm.web.forms import options
from crm.web.render import htmx_redirect, render
from crm.web.urls import safe_next
from crm.web.xlsx import cell as xlsx_cell

bp = Blueprint("consents", __name__, template_folder="templates")


@bp.app_context_processor
def _labels() -> dict[str, Any]:
    # Callables, so pages without consents pay nothing.
    return {"consent_labels": display_labels, "consent_task_info": _task_info}


# --- the purposes register -------------------------------------------------------------


def _get_purpose(purpose_id: int) -> ConsentPurpose:
    purpose = db.session.get(ConsentPurpose, purpose_id)
    if purpose is None:
        abort(404)
    return purpose


def _spec(form: PurposeForm) -> PurposeSpec:
    return PurposeSpec(
        name=form.name.data or "",
        key=form.key.data or "",
        description=form.description.data or "",
        legal_basis=LegalBasis(form.legal_basis.data),
        legitimate_interest=form.legitimate_interest.data or "",
        data_categories=form.data_categories.data or "",
        recipients=form.recipients.data or "",
        channels=list(form.channels.data or []),
        retention_months=form.retention_months.data or 0,
        retention_action=RetentionAction(form.retention_action.data),
        validity_months=form.validity_months.data or None,
        warning_days=form.warning_days.data or services.DEFAULT_WARNING_DAYS,
    )


def _languages() -> list[str]:
    return list(organisation().languages or ["en"])


def _register_rows() -> list[tuple[ConsentPurpose, dict[str, ConsentNotice]]]:
    return [(p, services.latest_notices(p.id)) for p in services.all_purposes()]


@bp.route("/admin/purposes/")
@requires(Permission.SETTINGS_MANAGE)
def index() -> ResponseReturnValue:
    return render("consents/purposes.html", purposes=_register_rows(), form=ConfirmForm())


@bp.route("/admin/purposes/new", methods=["GET", "POST"])
@requires(Permission.SETTINGS_MANAGE)
def create() -> ResponseReturnValue:
    languages = _languages()
    form = purpose_form(languages)
    error = None
    if form.validate_on_submit():
        try:
            purpose = services.create_purpose(_spec(form), form.notice_texts(), current_user)
        except ConsentError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
            flash(_("Purpose “%(name)s” added.", name=purpose.name), "success")
            return redirect(url_for("consents.index"))
    return render("consents/purpose_form.html", form=form, purpose=None, error=error, history=[])


@bp.route("/admin/purposes/<int:purpose_id>", methods=["GET", "POST"])
@requires(Permission.SETTINGS_MANAGE)
def edit(purpose_id: int) -> ResponseReturnValue:
    purpose = _get_purpose(purpose_id)
    languages = _languages()
    history = services.notice_versions(purpose.id)
    languages += sorted({n.language for n in history} - set(languages))
    form = purpose_form(languages, obj=purpose)
    if request.method == "GET":
        for language, notice in services.latest_notices(purpose.id).items():
            form[f"notice_{language}"].data = notice.text
    form.key.data = purpose.key  # fixed once saved
    error = None
    if form.validate_on_submit():
        try:
            _changes, added = services.update_purpose(
                purpose, _spec(form), form.notice_texts(), current_user
            )
        except ConsentError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
            if added:
                message = _(
                    "Purpose “%(name)s” saved; new notice versions: %(versions)s.",
                    name=purpose.name,
                    versions=", ".join(f"{n.language} v{n.version}" for n in added),
                )
            else:
                message = _("Purpose “%(name)s” saved.", name=purpose.name)
            flash(message, "success")
            return redirect(url_for("consents.index"))
    return render(
        "consents/purpose_form.html", form=form, purpose=purpose, error=error, history=history
    )


@bp.route("/admin/purposes/<int:purpose_id>/archive", methods=["POST"])
@requires(Permission.SETTINGS_MANAGE)
def archive(purpose_id: int) -> ResponseReturnValue:
    purpose = _get_purpose(purpose_id)
    if ConfirmForm().validate_on_submit():
        services.archive_purpose(purpose, current_user)
        db.session.commit()
        flash(_("Purpose “%(name)s” archived.", name=purpose.name), "success")
    return htmx_redirect(url_for("consents.index"))


@bp.route("/admin/purposes/<int:purpose_id>/restore", methods=["POST"])
@requires(Permission.SETTINGS_MANAGE)
def restore(purpose_id: int) -> ResponseReturnValue:
    purpose = _get_purpose(purpose_id)
    if ConfirmForm().validate_on_submit():
        services.restore_purpose(purpose, current_user)
        db.session.commit()
        flash(_("Purpose “%(name)s” restored.", name=purpose.name), "success")
    return htmx_redirect(url_for("consents.index"))


@bp.route("/admin/purposes/notices/<int:notice_id>")
@requires(Permission.SETTINGS_MANAGE)
def notice(notice_id: int) -> ResponseReturnValue:
    found = db.session.get(ConsentNotice, notice_id)
    if found is None:
        abort(404)
    return render(
        "consents/notice.html",
        "consents/_notice_text.html",
        notice=found,
        back=url_for("consents.edit", purpose_id=found.purpose_id),
    )


@bp.route("/admin/purposes/register")
@requires(Permission.SETTINGS_MANAGE)
def register() -> ResponseReturnValue:
    """The Art. 30 record of processing activities, laid out for printing."""
    return render(
        "consents/register.html",
        purposes=[row for row in _register_rows() if not row[0].is_archived],
        org=organisation(),
        today=datetime.now(get_timezone()).date(),
        language_name=language_name,
    )


def _months(n: int | None) -> str:
    return _("%(n)s months", n=n) if n else _("does not lapse")


def register_table() -> tuple[list[str], list[list[Any]]]:
    """The register as a header and rows (the xlsx sheet)."""
    header = [
        _("Purpose"),
        _("Key"),
        _("Description"),
        _("Legal basis"),
        _("Legitimate interest"),
        _("Categories of personal data"),
        _("Recipients and processors"),
        _("Contact channels"),
        _("Retention period"),
        _("When the retention period is over"),
        _("Consent valid for"),
        _("Notice versions in force"),
        _("Last changed"),
    ]
    zone = get_timezone()
    rows = []
    for purpose, notices in _register_rows():
        if purpose.is_archived:
            continue
        versions = ", ".join(
            f"{language_name(lang)} v{n.version} ({n.created_at.astimezone(zone):%Y-%m-%d})"
            for lang, n in sorted(notices.items())
        )
        rows.append(
            [
                purpose.name,
                purpose.key,
                purpose.description,
                str(BASIS_LABELS[purpose.legal_basis]),
                purpose.legitimate_interest,
                purpose.data_categories,
                purpose.recipients,
                ", ".join(str(CHANNEL_LABELS[c]) for c in purpose.channels or []),
                _months(purpose.retention_months),
                str(ACTION_LABELS[purpose.retention_action]),
                _months(purpose.validity_months) if purpose.is_consent else "",
                versions,
                purpose.updated_at.astimezone(zone).replace(tzinfo=None, microsecond=0),
            ]
        )
    return header, rows


def _cell(sheet: Any, value: Any, bold: bool = False) -> WriteOnlyCell:
    # Text is always a string cell: one beginning with = + - @ is never a formula.
    return xlsx_cell(sheet, value, bold=bold, wrap=True)


def register_xlsx() -> bytes:
    org = organisation()
    header, rows = register_table()
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=_("Processing register")[:31])
    sheet.append([_cell(sheet, _("Record of processing activities (GDPR Art. 30)"), bold=True)])
    sheet.append([_cell(sheet, _("Controller")), _cell(sheet, org.legal_name or org.name)])
    sheet.append([_cell(sheet, _("Address")), _cell(sheet, org.address or "")])
    sheet.append([_cell(sheet, _("Privacy contact")), _cell(sheet, org.privacy_contact or "")])
    sheet.append([])
    sheet.append([_cell(sheet, label, bold=True) for label in header])
    for row in rows:
        sheet.append([_cell(sheet, value) for value in row])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


@bp.route("/admin/purposes/register.xlsx")
@requires(Permission.SETTINGS_MANAGE)
def register_download() -> ResponseReturnValue:
    response = make_response(register_xlsx())
    response.headers["Content-Type"] = (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    stamp = datetime.now(get_timezone()).strftime("%Y-%m-%d")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="processing-register-{stamp}.xlsx"'
    )
    return response


# --- the card's section ----------------------------------------------------------------


def _notice_choices(purpose: ConsentPurpose | None) -> tuple[list[Any], dict[str, Any]]:
    """Select options for a purpose's notice versions (newest first per language) and
    the versions by id."""
    if purpose is None:
        return [], {}
    versions = services.notice_versions(purpose.id)
    newest = {}
    for n in versions:
        newest.setdefault(n.language, n.id)
    labels = [
        (
            str(n.id),
            _(
                "%(language)s, version %(version)s (%(date)s)",
                language=language_name(n.language),
                version=n.version,
                date=format_date(n.created_at),
            )
            + ("" if newest[n.language] == n.id else " — " + _("older")),
        )
        for n in versions
    ]
    return options(labels), {str(n.id): n for n in versions}


def _default_notice(versions: dict[str, ConsentNotice]) -> str | None:
    """The newest version in the organisation's language, else the newest one."""
    if not versions:
        return None
    ordered = sorted(versions.values(), key=lambda n: (n.created_at, n.id), reverse=True)
    preferred = [n for n in ordered if n.language == organisation().default_locale]
    return str((preferred or ordered)[0].id)


def _record_form(
    client: Client, formdata: Any = None, *, submitted: bool = False
) -> tuple[RecordForm, ConsentNotice | None]:
    """The record form for the purpose it names, with that purpose's notice versions as
    choices, and the chosen notice (to show its text). Opening the form (or changing
    its purpose) picks defaults; a submitted form is taken as sent, so an unknown
    purpose or notice is an error, never another one."""
    purposes = services.active_purposes()
    form = RecordForm(formdata=formdata)
    # A change of purpose or notice version reloads the form (with the notice's text).
    reload = {
        "hx-get": url_for("consents.record", client_id=client.id),
        "hx-include": "closest form",
        "hx-target": "#consent-panel",
        "hx-swap": "outerHTML",
        "hx-trigger": "change",
    }
    form.purpose_id.render_kw = reload
    form.notice_id.render_kw = reload
    form.purpose_id.choices = options((str(p.id), p.name) for p in purposes)
    chosen = next((p for p in purposes if str(p.id) == form.purpose_id.data), None)
    if chosen is None and purposes and not submitted:
        chosen = purposes[0]
        form.purpose_id.data = str(chosen.id)
    form.notice_id.choices, versions = _notice_choices(chosen)
    if not submitted:
        if form.notice_id.data not in versions:
            form.notice_id.data = _default_notice(versions)
        form.method.data = form.method.data or Method.PHONE.value
        form.kind.data = form.kind.data or EventKind.GIVEN.value
    return form, versions.get(form.notice_id.data or "")


def _panel(
    client: Client,
    *,
    form: RecordForm | None = None,
    shown_notice: ConsentNotice | None = None,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    return render(
        "consents/section.html",
        "consents/_panel_body.html",
        status=status,
        client=client,
        consents=services.consent_panel(client.id),
        record_form=form,
        shown_notice=shown_notice,
        consent_notice=notice,
        consent_error=error,
    )


def _back_to_card(client: Client, message: str | None, error: str | None) -> ResponseReturnValue:
    """Without htmx: back to the card, with the message flashed."""
    if message:
        flash(message, "success")
    if error:
        flash(error, "error")
    return redirect(url_for("clients.card", client_id=client.id) + "#consents")


@bp.route("/clients/<int:client_id>/consents")
@requires(Permission.CLIENTS_VIEW)
def panel(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    return _panel(client)


@bp.route("/clients/<int:client_id>/consents/events")
@requires(Permission.CLIENTS_VIEW)
def older(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    try:
        before = int(request.args.get("before", ""))
    except ValueError:
        before = None
    events, more = services.event_page(client.id, before)
    return render(
        "consents/_events.html",
        client=client,
        events=events,
        more=more,
        names=services.purpose_names(e.purpose_id for e in events),
    )


@bp.route("/clients/<int:client_id>/consents/notice")
@requires(Permission.CLIENTS_VIEW)
def client_notice(client_id: int) -> ResponseReturnValue:
    """A notice version's text, as the card's history links it (?id=<notice id>)."""
    client = get_client_or_404(current_user, client_id)
    notice_id = request.args.get("id", "")
    found = db.session.get(ConsentNotice, int(notice_id)) if notice_id.isdigit() else None
    if found is None:
        abort(404)
    return render(
        "consents/notice.html",
        "consents/_notice_text.html",
        notice=found,
        back=url_for("clients.card", client_id=client.id) + "#consents",
    )


@bp.route("/clients/<int:client_id>/consents/record", methods=["GET", "POST"])
@requires(Permission.CLIENTS_EDIT)
def record(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    if request.method == "GET":
        # Opening the form, or a change of purpose or notice version in it.
        form, shown = _record_form(client, request.args if request.args else None)
        return _panel(client, form=form, shown_notice=shown)
    form, shown = _record_form(client, request.form, submitted=True)
    valid = form.validate_on_submit()
    if not valid or shown is None:
        if valid:  # a purpose without notice versions
            form.notice_id.errors = [_("Choose the notice text the client was given.")]
        return _panel(client, form=form, shown_notice=shown, status=422)
    purpose = db.session.get(ConsentPurpose, int(form.purpose_id.data or 0))
    assert purpose is not None  # validated against the choices
    try:
        services.record_event(
            client.id,
            purpose,
            EventKind(form.kind.data),
            Method(form.method.data),
            notice=shown,
            actor=current_user,
            evidence=Evidence.from_request(),
            note=form.note.data or "",
        )
    except ConsentError as exc:
        db.session.rollback()
        form.kind.errors = [str(exc)]
        return _panel(client, form=form, shown_notice=shown, status=422)
    db.session.commit()
    message = _(
        "%(kind)s: %(purpose)s.", kind=KIND_LABELS[form.kind.data or ""], purpose=purpose.name
    )
    if not htmx:
        return _back_to_card(client, message, None)
    return _panel(client, notice=message)


@bp.route("/clients/<int:client_id>/consents/<int:purpose_id>/withdraw", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def withdraw(client_id: int, purpose_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    purpose = _get_purpose(purpose_id)
    message = error = None
    if not ConfirmForm().validate_on_submit():
        error = _("The form expired; try again.")
    else:
        try:
            services.record_event(
                client.id,
                purpose,
                EventKind.WITHDRAWN,
                Method.STAFF,
                actor=current_user,
                evidence=Evidence.from_request(),
            )
        except ConsentError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
            message = _("Consent withdrawn: %(purpose)s.", purpose=purpose.name)
    if not htmx:
        return _back_to_card(client, message, error)
    return _panel(client, notice=message, error=error, status=422 if error else 200)


def _send_renewal(client: Client, purpose: ConsentPurpose) -> tuple[str | None, str | None]:
    if not ConfirmForm().validate_on_submit():
        return None, _("The form expired; try again.")
    try:
        renewal = services.request_renewal(client, purpose, current_user)
    except ConsentError as exc:
        db.session.rollback()
        return None, str(exc)
    db.session.commit()
    return _(
        "Renewal request for “%(purpose)s” sent to %(email)s.",
        purpose=purpose.name,
        email=renewal.sent_to,
    ), None


@bp.route("/clients/<int:client_id>/consents/<int:purpose_id>/renewal", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def send_renewal(client_id: int, purpose_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    purpose = _get_purpose(purpose_id)
    message, error = _send_renewal(client, purpose)
    target = safe_next(request.form.get("next"))
    if target:  # from the task page
        if message:
            flash(message, "success")
        if error:
            flash(error, "error")
        return htmx_redirect(target)
    if not htmx:
        return _back_to_card(client, message, error)
    return _panel(client, notice=message, error=error, status=422 if error else 200)


def _task_info(task: Task) -> dict[str, Any] | None:
    """For the task page: the consent an expiry task is about, if the user may act on
    its client (the task page already checked the client's scope)."""
    if task.origin != TaskOrigin.CONSENT_EXPIRY.value or task.client_id is None:
        return None
    ref = (task.origin_ref or "").removeprefix("consent:")
    if not ref.isdigit():
        return None
    event = db.session.get(ConsentEvent, int(ref))
    if event is None:
        return None
    rows = {r.purpose.id: r for r in services.purpose_rows(event.client_id)}
    row = rows.get(event.purpose_id)
    if row is None:
        return None
    client = db.session.get(Client, event.client_id)
    return {
        "row": row,
        "client": client,
        "renewable": services.renewable(row) and bool(client and client.email),
    }


# --- the public renewal page -----------------------------------------------------------


def _renewal_error(reason: str) -> ResponseReturnValue:
    messages = {
        "invalid": _(
            "This link is not valid. It may be incomplete or changed: use the link from "
            "the email exactly as it was sent."
        ),
        "expired": _("This link has expired. Ask us for a new one to keep your consent."),
        "used": _("This link was used already. Each link works once."),
        "void": _(
            "This request no longer applies: your consent was withdrawn or the purpose ended."
        ),
    }
    return render("consents/renew_error.html", status=400, message=messages[reason], reason=reason)


@bp.route("/consent/renew/<token>", methods=["GET", "POST"])
@public
def renew(token: str) -> ResponseReturnValue:
    """GET shows the notice and asks (a link scanner changes nothing); POST answers."""
    try:
        renewal = services.redeemable_renewal(token)
    except RenewalError as exc:
        return _renewal_error(exc.reason)
    form = ConfirmForm()
    with force_locale(renewal.notice.language):
        if request.method == "POST" and form.validate_on_submit():
            agree = request.form.get("answer") == "yes"
            evidence = Evidence.from_request()
            # The page, not the token: the link is a credential and stays out of the record.
            evidence.source_url = request.host_url.rstrip("/") + "/consent/renew"
            try:
                event = services.answer_renewal(renewal, agree, evidence)
            except RenewalError as exc:
                db.session.rollback()
                return _renewal_error(exc.reason)
            db.session.commit()
            return render("consents/renew_done.html", renewal=renewal, event=event)
        state = db.session.scalar(
            select(ConsentState).where(
                ConsentState.client_id == renewal.client_id,
                ConsentState.purpose_id == renewal.purpose_id,
            )
        )
        return render(
            "consents/renew.html",
            renewal=renewal,
            state=state,
            form=form,
            org=organisation(),
        )
