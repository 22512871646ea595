"""The public booking page (/book) and the client's manage link.

Every route is @public and works without JavaScript: each step is a plain GET link or
a POST form. The IP allow-list applies to signed-in staff only (crm.security), so the
pages stay reachable from anywhere. GET never changes anything; POST carries the CSRF
token of the page. No page shows client data: the manage link may be forwarded.

A filled honeypot field gets the same kind of answer as a booking would (a 200 page
saying the request was received), so a bot learns nothing, and nothing is booked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_babel import gettext as _

from crm.appointments import services as appointments
from crm.appointments.models import Appointment, AppointmentSource, Service
from crm.appointments.services import BookingError, SlotTaken
from crm.booking import services
from crm.booking.forms import data_fields, details_form
from crm.booking.links import load_manage_token, manage_token, manage_url
from crm.consents.forms import ConfirmForm
from crm.consents.models import ConsentPurpose
from crm.consents.services import Evidence, find_purpose
from crm.extensions import db, limiter
from crm.org.services import organisation
from crm.web.access import public
from crm.web.render import render

bp = Blueprint(
    "booking",
    __name__,
    url_prefix="/book",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/booking",
)

BOOKING_LIMIT = "10 per minute; 30 per hour"


class PageError(Exception):
    """A bad link or parameter: a 4xx page of this blueprint (not the staff error page,
    which links to the sign-in)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@bp.errorhandler(PageError)
def _page_error(error: PageError) -> ResponseReturnValue:
    return render("booking/error.html", status=error.status, message=error.message, back=None)


@bp.errorhandler(429)
def _too_many(error: Exception) -> ResponseReturnValue:
    return render("booking/limited.html", status=429)


# --- helpers ---------------------------------------------------------------------------


def _service_or_404(service_id: int) -> Service:
    service = services.get_bookable(service_id)
    if service is None:
        abort(404)
    return service


def _staff_arg(service: Service) -> int | None:
    """The chosen staff member (None: anyone); 404 for one who does not offer it."""
    raw = request.values.get("staff", "")
    if raw in ("", "any"):
        return None
    if not raw.isdigit() or int(raw) not in {u.id for u in services.public_staff(service)}:
        abort(404)
    return int(raw)


def _start_arg() -> datetime:
    raw = request.values.get("start", "")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise PageError(_("This time is not valid. Pick one from the list of free times."))
    return value.astimezone(UTC)


def _week_arg(service: Service) -> tuple[date, date, date]:
    """(first day shown, today, the last day of the booking window), all local."""
    today = appointments.local_today()
    last = today + timedelta(days=service.max_days_ahead)
    raw = request.args.get("week", "")
    try:
        first = date.fromisoformat(raw) if raw else today
    except ValueError:
        first = today
    return min(max(first, today), last), today, last


def _evidence(path: str | None = None) -> Evidence:
    evidence = Evidence.from_request()
    # The page, without the query or a token: a manage token is a credential.
    evidence.source_url = request.host_url.rstrip("/") + (path or request.path)
    return evidence


def _language() -> str:
    return str(get_locale() or organisation().default_locale or "en")


def _contract_retention() -> int | None:
    contract = find_purpose("contract")
    return contract.retention_months if contract is not None else None


def _error(message: str, status: int = 400, back: str | None = None) -> ResponseReturnValue:
    return render("booking/error.html", status=status, message=message, back=back)


def _week_view(
    service: Service,
    *,
    staff_id: int | None,
    endpoint: str,
    slot_endpoint: str,
    exclude_appointment: int | None = None,
    **route: Any,
) -> dict[str, Any]:
    """What the week picker shows: days with their slot links, the staff choice and the
    week navigation, for booking (`slot_endpoint` the details form) or moving."""
    first, today, last = _week_arg(service)
    by_day = services.week_slots(service, first, staff_id, exclude_appointment=exclude_appointment)
    staff = services.public_staff(service)
    staff_param = staff_id if staff_id is not None else None
    days = []
    for n in range(services.WEEK):
        day = first + timedelta(days=n)
        if day > last:
            break
        slots = [
            (
                slot,
                url_for(
                    slot_endpoint,
                    **route,
                    start=slot.starts_at.isoformat(),
                    staff=staff_param,
                ),
            )
            for slot in by_day.get(day, [])
        ]
        days.append((day, slots))
    prev = first - timedelta(days=services.WEEK)
    nxt = first + timedelta(days=services.WEEK)
    choices = [(_("Anyone"), None)] + [(services.staff_label(u, staff), u.id) for u in staff]
    return {
        "service": service,
        "days": days,
        "any_free": any(slots for _day, slots in days),
        "first": first,
        "prev_url": url_for(endpoint, **route, week=max(prev, today).isoformat(), staff=staff_param)
        if first > today
        else None,
        "next_url": url_for(endpoint, **route, week=nxt.isoformat(), staff=staff_param)
        if nxt <= last
        else None,
        "staff_choices": [
            (label, url_for(endpoint, **route, week=first.isoformat(), staff=uid), uid == staff_id)
            for label, uid in choices
        ],
        "show_staff": len(staff) > 1,
        "org_zone_name": organisation().timezone,
    }


# --- booking ---------------------------------------------------------------------------


@bp.route("")
@public
def index() -> ResponseReturnValue:
    return render(
        "booking/services.html",
        services=services.bookable_services(),
        currency=organisation().default_currency,
    )


@bp.route("/<int:service_id>")
@public
def slots(service_id: int) -> ResponseReturnValue:
    service = _service_or_404(service_id)
    view = _week_view(
        service,
        staff_id=_staff_arg(service),
        endpoint="booking.slots",
        slot_endpoint="booking.details",
        service_id=service.id,
    )
    return render("booking/slots.html", **view)


def _details_page(
    service: Service,
    form: Any,
    starts_at: datetime,
    staff_id: int | None,
    *,
    status: int = 200,
) -> ResponseReturnValue:
    marketing = services.marketing_purpose()
    marketing_notice = services.notice_for(marketing) if marketing is not None else None
    staff = services.public_staff(service)
    chosen = next((u for u in staff if u.id == staff_id), None)
    return render(
        "booking/details.html",
        status=status,
        service=service,
        form=form,
        fields=[form[name] for name in data_fields(service.required_data)],
        starts_at=starts_at,
        staff_name=services.staff_label(chosen, staff) if chosen else None,
        staff_id=staff_id,
        org=organisation(),
        privacy_url=services.privacy_notice_link(),
        retention_months=_contract_retention(),
        marketing=marketing,
        marketing_notice=marketing_notice,
        back=url_for(
            "booking.slots",
            service_id=service.id,
            staff=staff_id,
            week=starts_at.astimezone(appointments.org_zone()).date().isoformat(),
        ),
    )


def _form_for(service: Service) -> Any:
    marketing = services.marketing_purpose()
    label = None
    if marketing is not None:
        label = _(
            "Yes, send me “%(purpose)s” by email. Optional; you can withdraw at any time.",
            purpose=marketing.name,
        )
    return details_form(
        service.required_data,
        phone_region=organisation().default_phone_region,
        marketing_label=label,
        reminders_consent=services.reminders_need_consent(),
    )


def _taken(service: Service, starts_at: datetime, staff_id: int | None) -> ResponseReturnValue:
    db.session.rollback()
    return render(
        "booking/taken.html",
        status=409,
        starts_at=starts_at,
        back=url_for(
            "booking.slots",
            service_id=service.id,
            staff=staff_id,
            week=starts_at.astimezone(appointments.org_zone()).date().isoformat(),
        ),
    )


@bp.route("/<int:service_id>/details", methods=["GET", "POST"])
@public
@limiter.limit(BOOKING_LIMIT, methods=["POST"])
def details(service_id: int) -> ResponseReturnValue:
    service = _service_or_404(service_id)
    staff_id = _staff_arg(service)
    starts_at = _start_arg()
    form = _form_for(service)
    if request.method == "GET" or not form.validate_on_submit():
        if not services.free_staff_at(service, starts_at, staff_id):
            return _taken(service, starts_at, staff_id)
        return _details_page(
            service, form, starts_at, staff_id, status=422 if request.method == "POST" else 200
        )
    if form.is_bot:
        return render("booking/received.html")
    return _book(service, form, starts_at, staff_id)


def _book(service: Service, form: Any, starts_at: datetime, staff_id: int | None) -> Any:
    values = form.values()
    consents = services.Consents(
        marketing=bool("marketing" in form and form.marketing.data),
        reminders=bool("reminders" in form and form.reminders.data),
    )
    evidence = _evidence()
    language = _language()
    marketing = services.marketing_purpose()
    marketing_id = marketing.id if marketing is not None else None
    candidates = services.free_staff_at(service, starts_at, staff_id)
    if not candidates:
        return _taken(service, starts_at, staff_id)
    service_id = service.id
    appointment: Appointment | None = None
    for candidate in candidates:
        # SQLite: the booking lock must open a fresh transaction, so the reads above
        # are committed first; the client is matched under the lock.
        db.session.commit()
        try:
            services.lock_for_booking(candidate)
            fresh = db.session.get(Service, service_id)
            assert fresh is not None
            match = services.match_or_create_client(values)
            appointment = appointments.book(
                service=fresh,
                staff_id=candidate,
                client_id=match.client.id,
                starts_at=starts_at,
                notes=services.differing_note(match.differing),
                source=AppointmentSource.ONLINE,
            )
        except SlotTaken:
            db.session.rollback()
            appointment = None
            continue  # "anyone": the next free staff member
        except BookingError as exc:
            db.session.rollback()
            return _error(str(exc), back=url_for("booking.slots", service_id=service_id))
        break
    if appointment is None:
        return _taken(service, starts_at, staff_id)
    purpose = db.session.get(ConsentPurpose, marketing_id) if marketing_id else None
    services.record_consents(match.client, consents, evidence, marketing=purpose)
    link = manage_url(appointment)
    services.send_confirmation(appointment, link, language)
    token = manage_token(appointment)
    db.session.commit()
    return redirect(url_for("booking.manage", token=token, booked=1), code=303)


# --- the manage link -------------------------------------------------------------------


def _appointment_or_400(token: str) -> Appointment:
    appointment = load_manage_token(token)
    if appointment is None:
        raise PageError(
            _(
                "This link is not valid. It may be incomplete or replaced by a newer one: "
                "use the link from your latest email exactly as it was sent."
            )
        )
    return appointment


def _manage_page(
    appointment: Appointment,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    client = appointment.client
    return render(
        "booking/manage.html",
        status=status,
        appointment=appointment,
        token=request.view_args["token"] if request.view_args else "",
        status_label=appointments.status_labels().get(appointment.status, appointment.status),
        staff_name=services.staff_label(appointment.staff),
        place=services.place_of(appointment),
        can_change=services.can_change(appointment) and client.restricted_at is None,
        restricted=client.restricted_at is not None,
        deadline=services.change_deadline(appointment),
        sms_possible=bool(client.phone) and client.sms_opt_out_at is None,
        sms_stopped=client.sms_opt_out_at is not None,
        booked=request.args.get("booked") == "1",
        org=organisation(),
        form=ConfirmForm(),
        notice=notice,
        error=error,
    )


def _done(token: str, message: str) -> ResponseReturnValue:
    """After a change: back to the manage page (a reload does not post again)."""
    flash(message, "success")
    return redirect(url_for("booking.manage", token=token), code=303)


def _refusal(appointment: Appointment) -> str | None:
    """Why the client cannot change this booking online now, or None."""
    if appointment.client.restricted_at is not None:
        return _("This booking cannot be changed online. Please contact us.")
    if not appointment.holds_time:
        return _("This booking was cancelled.")
    if not services.can_change(appointment):
        return _("Changes online are no longer possible for this booking. Please contact us.")
    return None


@bp.route("/manage/<token>")
@public
def manage(token: str) -> ResponseReturnValue:
    return _manage_page(_appointment_or_400(token))


@bp.route("/manage/<token>/cancel", methods=["GET", "POST"])
@public
def cancel(token: str) -> ResponseReturnValue:
    """GET asks (a link scanner changes nothing); POST cancels."""
    appointment = _appointment_or_400(token)
    refusal = _refusal(appointment)
    if refusal:
        return _manage_page(
            appointment, error=refusal, status=409 if request.method == "POST" else 200
        )
    form = ConfirmForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            return _manage_page(appointment, error=_("The page expired; try again."), status=400)
        appointments.cancel(appointment)
        db.session.commit()
        return _done(token, _("Your booking is cancelled."))
    return render(
        "booking/cancel.html",
        appointment=appointment,
        token=token,
        form=form,
        place=services.place_of(appointment),
    )


@bp.route("/manage/<token>/reschedule")
@public
def reschedule(token: str) -> ResponseReturnValue:
    appointment = _appointment_or_400(token)
    refusal = _refusal(appointment)
    if refusal:
        return _manage_page(appointment, error=refusal)
    service = appointment.service
    view = _week_view(
        service,
        staff_id=_staff_arg(service),
        endpoint="booking.reschedule",
        slot_endpoint="booking.move",
        exclude_appointment=appointment.id,
        token=token,
    )
    return render("booking/reschedule.html", appointment=appointment, token=token, **view)


@bp.route("/manage/<token>/move", methods=["GET", "POST"])
@public
def move(token: str) -> ResponseReturnValue:
    """GET asks to confirm the new time; POST moves the booking there."""
    appointment = _appointment_or_400(token)
    refusal = _refusal(appointment)
    if refusal:
        return _manage_page(
            appointment, error=refusal, status=409 if request.method == "POST" else 200
        )
    service = appointment.service
    staff_id = _staff_arg(service)
    starts_at = _start_arg()
    back = url_for(
        "booking.reschedule",
        token=token,
        staff=staff_id,
        week=starts_at.astimezone(appointments.org_zone()).date().isoformat(),
    )
    candidates = services.free_staff_at(
        service, starts_at, staff_id, exclude_appointment=appointment.id
    )
    if not candidates:
        db.session.rollback()
        return render("booking/taken.html", status=409, starts_at=starts_at, back=back)
    form = ConfirmForm()
    if request.method == "GET" or not form.validate_on_submit():
        return render(
            "booking/move.html",
            status=400 if request.method == "POST" else 200,
            appointment=appointment,
            token=token,
            form=form,
            starts_at=starts_at,
            staff_id=staff_id,
            back=back,
            expired=request.method == "POST",
        )
    appointment_id, current_staff_id = appointment.id, appointment.staff_id
    # The same staff member when still free (the client chose them), else the first.
    order = sorted(candidates, key=lambda sid: sid != current_staff_id)
    for candidate in order:
        db.session.commit()  # SQLite: the lock must be the first statement
        fresh = db.session.get(Appointment, appointment_id)
        try:
            assert fresh is not None
            appointments.reschedule(
                fresh, current_staff_id=current_staff_id, staff_id=candidate, starts_at=starts_at
            )
        except SlotTaken:
            db.session.rollback()
            continue
        except BookingError as exc:
            db.session.rollback()
            return _error(str(exc), back=back)
        db.session.commit()
        return _done(token, _("Your booking is moved."))
    return render("booking/taken.html", status=409, starts_at=starts_at, back=back)


@bp.route("/manage/<token>/sms-stop", methods=["POST"])
@public
def sms_stop(token: str) -> ResponseReturnValue:
    from crm.appointments.reminders import set_sms_opt_out

    appointment = _appointment_or_400(token)
    if not ConfirmForm().validate_on_submit():
        return _manage_page(appointment, error=_("The page expired; try again."), status=400)
    if appointment.client.restricted_at is not None:
        return _manage_page(appointment, error=_refusal(appointment), status=409)
    set_sms_opt_out(appointment.client, True)
    db.session.commit()
    return _done(token, _("You will get no more SMS reminders from us."))
