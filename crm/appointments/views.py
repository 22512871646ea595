"""The staff calendar, booking, one appointment's page, services and working hours.

The calendar is one partial (`_calendar.html`) that serves the full page and every htmx
navigation (prev/next/today, view, staff, service), with the URL kept in step by
hx-push-url, so a reload or a shared link shows the same calendar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select

from crm.appointments import reminders, services
from crm.appointments.forms import (
    CLIENT_DATA_LABELS,
    WEEKDAYS,
    BlockForm,
    BookingForm,
    ExceptionForm,
    NotesForm,
    ServiceForm,
    WeeklyHoursForm,
    format_intervals,
    parse_instant,
)
from crm.appointments.models import (
    Appointment,
    AppointmentStatus,
    BlockKind,
    ExceptionKind,
    Service,
)
from crm.appointments.policy import get_appointment_or_404, visible_client_ids
from crm.appointments.services import BookingError, ServiceSpec, SlotTaken
from crm.appointments.slots import labelled_blocks, load_schedules, to_instant, working_intervals
from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.clients.listing import search_condition
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404, visible_clients
from crm.consents.models import Method
from crm.consents.services import Evidence
from crm.extensions import db
from crm.org.services import organisation
from crm.sqltypes import utcnow
from crm.web.access import public, requires
from crm.web.render import render
from crm.web.urls import next_url, safe_next

bp = Blueprint(
    "appointments",
    __name__,
    url_prefix="/appointments",
    template_folder="templates",
    static_folder="static",
)

ROW = timedelta(minutes=15)
CLIENT_OPTIONS = 10
RESCHEDULE_DAYS = 7
MIN_DATE, MAX_DATE = date(2000, 1, 1), date(2199, 12, 31)


@bp.app_context_processor
def _appointment_helpers() -> dict[str, Any]:
    return {"appointment_statuses": services.status_labels}


def _int_arg(name: str) -> int | None:
    raw = request.values.get(name, "")
    return int(raw) if raw.isdigit() else None


def _date_arg(name: str = "date") -> date:
    raw = request.values.get(name, "")
    try:
        value = date.fromisoformat(raw) if raw else services.local_today()
    except ValueError:
        abort(400)
    if not MIN_DATE <= value <= MAX_DATE:  # and date arithmetic never overflows
        abort(400)
    return value


def _wall(value: datetime) -> datetime:
    return value.astimezone(services.org_zone())


# --- the calendar --------------------------------------------------------------------------


@dataclass
class Cell:
    kind: str  # appointments, block, slot, open, off, covered
    span: int = 1
    items: list[Any] = field(default_factory=list)
    instant: datetime | None = None
    note: str = ""


@dataclass
class Column:
    staff: User
    day: date
    cells: list[Cell]


@dataclass
class TeamCell:
    appointments: list[Appointment]
    free: int
    working: bool


def _row_times(start: time, end: time) -> list[time]:
    rows, minute = [], start.hour * 60 + start.minute
    stop = end.hour * 60 + end.minute if end != time(0) else 24 * 60
    while minute < stop:
        rows.append(time(minute // 60, minute % 60))
        minute += 15
    return rows


def _row_index(rows: list[time], wall: datetime, day: date, ceil: bool = False) -> int:
    if wall.date() < day:
        return 0
    if wall.date() > day:
        return len(rows)
    first = rows[0].hour * 60 + rows[0].minute
    minutes = wall.hour * 60 + wall.minute - first
    index = -(-minutes // 15) if ceil else minutes // 15
    return max(0, min(len(rows), index))


def _build_column(
    staff: User,
    day: date,
    rows: list[time],
    schedule: Any,
    appointments: list[Appointment],
    slot_starts: set[datetime],
) -> Column:
    zone = services.org_zone()
    cells: list[Cell | None] = [None] * len(rows)
    heads: dict[int, int] = {}  # covered row -> its head row

    def place(kind: str, start: datetime, end: datetime, item: Any, note: str = "") -> None:
        si = _row_index(rows, _wall(start), day)
        ei = max(si + 1, _row_index(rows, _wall(end), day, ceil=True))
        if si >= len(rows):
            return
        if cells[si] is not None:
            head = cells[heads.get(si, si)]
            if head is not None and head.kind == "appointments" and kind == "appointments":
                head.items.append(item)
            return
        span = 0
        while si + span < min(ei, len(rows)) and cells[si + span] is None:
            span += 1
        cells[si] = Cell(kind, span=span, items=[item] if item else [], note=note)
        for n in range(si + 1, si + span):
            cells[n] = Cell("covered")
            heads[n] = si

    holding = [a for a in appointments if a.holds_time]
    for appointment in sorted(holding, key=lambda a: (a.starts_at, a.id)):
        place("appointments", appointment.starts_at, appointment.ends_at, appointment)
    for start, end, note in labelled_blocks(schedule, day, zone):
        place("block", start, end, None, note or _("Blocked"))
    working = working_intervals(schedule, day, zone)
    result: list[Cell] = []
    for n, row in enumerate(rows):
        cell = cells[n]
        if cell is None:
            instant = to_instant(day, row, zone)
            if instant in slot_starts:
                cell = Cell("slot", instant=instant)
            elif any(s <= instant < e for s, e in working):
                cell = Cell("open")
            else:
                cell = Cell("off")
        result.append(cell)
    return Column(staff=staff, day=day, cells=result)


def _calendar_context() -> dict[str, Any]:
    view = "week" if request.args.get("view") == "week" else "day"
    day = _date_arg()
    staff_arg = request.args.get("staff", "")
    all_staff = services.bookable_staff()
    chosen_staff = None
    if staff_arg.isdigit():
        chosen_staff = next((u for u in all_staff if u.id == int(staff_arg)), None)
        if chosen_staff is None:
            abort(404)
    staff = [chosen_staff] if chosen_staff else all_staff
    offered = services.active_services()
    service = None
    service_id = _int_arg("service")
    if service_id is not None:
        service = next((s for s in offered if s.id == service_id), None)
        if service is None:
            abort(404)
    elif offered:
        service = offered[0]
    client = None
    client_id = _int_arg("client_id")
    if client_id is not None:
        client = get_client_or_404(current_user, client_id)

    if view == "week":
        first = day - timedelta(days=day.weekday())
        days = [first + timedelta(days=n) for n in range(7)]
    else:
        days = [day]
    zone = services.org_zone()
    ids = [u.id for u in staff]
    begin, end = services.day_bounds(days[0], days[-1])
    appointments = services.appointments_between(ids, begin, end)
    schedules = load_schedules(ids, days[0], days[-1], zone)
    slots = []
    if service is not None:
        offering = {u.id for u in service.staff}
        slots = services.slots_for(
            service,
            days[0],
            days[-1],
            staff_ids=[i for i in ids if i in offering],
            honour_window=False,
        )
    visible = visible_client_ids(current_user, {a.client_id for a in appointments})
    by_column: dict[tuple[int, date], list[Appointment]] = {}
    for appointment in appointments:
        key = (appointment.staff_id, _wall(appointment.starts_at).date())
        by_column.setdefault(key, []).append(appointment)
    slot_starts: dict[tuple[int, date], set[datetime]] = {}
    for slot in slots:
        key = (slot.staff_id, _wall(slot.starts_at).date())
        slot_starts.setdefault(key, set()).add(slot.starts_at)

    context: dict[str, Any] = {
        "view": view,
        "day": day,
        "days": days,
        "today": services.local_today(),
        "staff": staff,
        "all_staff": all_staff,
        "chosen_staff": chosen_staff,
        "services": offered,
        "service": service,
        "client": client,
        "visible": visible,
        "prev": days[0] - timedelta(days=7 if view == "week" else 1),
        "next": days[0] + timedelta(days=7 if view == "week" else 1),
        "weekdays": WEEKDAYS,
        "zone_name": zone.key,
    }
    if view == "week" and chosen_staff is None:
        matrix = []
        for user in staff:
            row = []
            for d in days:
                row.append(
                    TeamCell(
                        appointments=by_column.get((user.id, d), []),
                        free=len(slot_starts.get((user.id, d), ())),
                        working=bool(working_intervals(schedules[user.id], d, zone)),
                    )
                )
            matrix.append((user, row))
        context["matrix"] = matrix
        return context

    # The grid: 8:00-18:00, widened to every working interval and appointment shown.
    first_minute, last_minute = 8 * 60, 18 * 60
    for user in staff:
        for d in days:
            spans = [
                (_wall(s), _wall(e)) for s, e in working_intervals(schedules[user.id], d, zone)
            ]
            spans += [
                (_wall(a.starts_at), _wall(a.ends_at))
                for a in by_column.get((user.id, d), [])
                if a.holds_time
            ]
            for s, e in spans:
                first_minute = min(first_minute, s.hour * 60 if s.date() == d else 0)
                end_minute = e.hour * 60 + e.minute if e.date() == d else 24 * 60
                last_minute = max(last_minute, -(-end_minute // 60) * 60)
    rows = _row_times(
        time(first_minute // 60), time(last_minute // 60) if last_minute < 24 * 60 else time(0)
    )
    columns = [
        _build_column(
            user,
            d,
            rows,
            schedules[user.id],
            by_column.get((user.id, d), []),
            slot_starts.get((user.id, d), set()),
        )
        for user in staff
        for d in days
    ]
    context.update(rows=rows, columns=columns)
    return context


@bp.route("/")
@requires(Permission.APPOINTMENTS_VIEW)
def calendar() -> ResponseReturnValue:
    return render(
        "appointments/calendar.html", "appointments/_calendar.html", **_calendar_context()
    )


# --- booking -------------------------------------------------------------------------------


def _slot_args() -> tuple[User, datetime]:
    staff_id = _int_arg("staff")
    starts_at = parse_instant(request.values.get("start"))
    staff = db.session.get(User, staff_id) if staff_id is not None else None
    if staff is None or starts_at is None or not MIN_DATE <= starts_at.date() <= MAX_DATE:
        abort(400)
    return staff, starts_at


def _calendar_url(staff_id: int | None, starts_at: datetime, **extra: Any) -> str:
    return url_for(
        "appointments.calendar",
        date=_wall(starts_at).date().isoformat(),
        staff=staff_id,
        **extra,
    )


def _taken(staff: User, starts_at: datetime, service: Service | None) -> ResponseReturnValue:
    db.session.rollback()
    return render(
        "appointments/taken.html",
        status=409,
        staff=staff,
        starts_at=starts_at,
        back=_calendar_url(staff.id, starts_at, service=service.id if service else None),
    )


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def book() -> ResponseReturnValue:
    staff, starts_at = _slot_args()
    offered = [s for s in services.active_services() if staff.id in {u.id for u in s.staff}]
    if not offered:
        abort(404)
    form = BookingForm(user=current_user, services=offered)
    ask_reminders = reminders.reminders_need_consent()
    if request.method == "GET":
        service_id = _int_arg("service")
        form.service_id.data = str(service_id or offered[0].id)
        client_id = _int_arg("client_id")
        if client_id is not None:
            form.client = get_client_or_404(current_user, client_id)
            form.client_id.data = str(client_id)
    if request.method == "POST" and form.validate_on_submit() and form.client is not None:
        service, client = form.service, form.client
        staff_id, client_id = staff.id, client.id
        # SQLite: the lock must be the first statement of a fresh transaction, so the
        # ids are taken before the commit expires the objects.
        db.session.commit()
        try:
            appointment = services.book(
                service=service,
                staff_id=staff_id,
                client_id=client_id,
                starts_at=starts_at,
                notes=form.notes.data or "",
                created_by=current_user,
            )
        except SlotTaken:
            return _taken(staff, starts_at, service)
        except BookingError as exc:
            db.session.rollback()
            form.service_id.errors = [*form.service_id.errors, str(exc)]
        else:
            # Contract or legitimate interest: recorded on its own; consent: only when
            # the box was ticked.
            reminders.record_reminders_basis(
                client,
                method=Method.STAFF,
                evidence=Evidence.from_request(),
                actor=current_user,
                agreed=ask_reminders and bool(form.reminders_agreed.data),
            )
            db.session.commit()
            flash(
                _(
                    "Booked: %(service)s for %(client)s.",
                    service=service.name,
                    client=client.display_name,
                ),
                "success",
            )
            return redirect(
                next_url(_calendar_url(None, appointment.starts_at, service=service.id))
            )
    return render(
        "appointments/book.html",
        ask_reminders=ask_reminders,
        form=form,
        staff=staff,
        starts_at=starts_at,
        next=safe_next(request.values.get("next")),
        back=_calendar_url(staff.id, starts_at),
    )


@bp.route("/clients")
@requires(Permission.APPOINTMENTS_EDIT)
def client_options() -> ResponseReturnValue:
    """Clients matching a quick search, as radio buttons for the booking form."""
    q = request.args.get("q", "")[:200]
    condition = search_condition(q)
    clients: list[Client] = []
    if condition is not None:
        clients = list(
            db.session.scalars(
                select(Client)
                .where(visible_clients(current_user), condition)
                .order_by(Client.last_name, Client.first_name, Client.id)
                .limit(CLIENT_OPTIONS)
            )
        )
    return render("appointments/_client_options.html", clients=clients, q=q, chosen=None)


# --- one appointment -----------------------------------------------------------------------


def _get_appointment(appointment_id: int) -> Appointment:
    return get_appointment_or_404(current_user, appointment_id)


def _appointment_page(appointment: Appointment, form: NotesForm | None = None) -> Any:
    return render(
        "appointments/appointment.html",
        appointment=appointment,
        form=form or NotesForm(formdata=None, obj=appointment),
        now=utcnow(),
        back=_calendar_url(None, appointment.starts_at),
    )


@bp.route("/<int:appointment_id>", methods=["GET", "POST"])
@requires(Permission.APPOINTMENTS_VIEW)
def show(appointment_id: int) -> ResponseReturnValue:
    appointment = _get_appointment(appointment_id)
    if request.method == "POST":
        if not current_user.can(Permission.APPOINTMENTS_EDIT):
            abort(403)
        form = NotesForm()
        if form.validate_on_submit():
            services.update_notes(appointment, form.notes.data or "")
            db.session.commit()
            flash(_("Notes saved."), "success")
            return redirect(url_for("appointments.show", appointment_id=appointment.id))
        return _appointment_page(appointment, form)
    return _appointment_page(appointment)


@bp.route("/<int:appointment_id>/status", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def change_status(appointment_id: int) -> ResponseReturnValue:
    appointment = _get_appointment(appointment_id)
    try:
        status = AppointmentStatus(request.form.get("status", ""))
    except ValueError:
        abort(400)
    if status is AppointmentStatus.CANCELLED:
        return redirect(url_for("appointments.cancel", appointment_id=appointment.id))
    try:
        services.set_status(appointment, status)
    except BookingError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash(_("Marked as %(status)s.", status=services.status_labels()[status.value]), "success")
    return redirect(next_url(url_for("appointments.show", appointment_id=appointment.id)))


@bp.route("/<int:appointment_id>/cancel", methods=["GET", "POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def cancel(appointment_id: int) -> ResponseReturnValue:
    appointment = _get_appointment(appointment_id)
    if request.method == "POST":
        try:
            services.cancel(appointment)
        except BookingError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return redirect(url_for("appointments.show", appointment_id=appointment.id))
        db.session.commit()
        flash(_("Appointment cancelled; the time is free again."), "success")
        return redirect(next_url(_calendar_url(None, appointment.starts_at)))
    return render("appointments/cancel.html", appointment=appointment)


@bp.route("/<int:appointment_id>/reschedule", methods=["GET", "POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def reschedule(appointment_id: int) -> ResponseReturnValue:
    appointment = _get_appointment(appointment_id)
    if not appointment.holds_time:
        flash(_("A cancelled appointment cannot be moved; book a new one."), "error")
        return redirect(url_for("appointments.show", appointment_id=appointment.id))
    if request.method == "POST":
        staff, starts_at = _slot_args()
        staff_id, current_staff_id = staff.id, appointment.staff_id
        db.session.commit()  # SQLite: the lock must be the first statement
        try:
            services.reschedule(
                appointment,
                current_staff_id=current_staff_id,
                staff_id=staff_id,
                starts_at=starts_at,
            )
        except SlotTaken:
            return _taken(staff, starts_at, appointment.service)
        except BookingError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return redirect(url_for("appointments.reschedule", appointment_id=appointment_id))
        db.session.commit()
        flash(_("Appointment moved."), "success")
        return redirect(url_for("appointments.show", appointment_id=appointment_id))
    first = _date_arg() if request.args.get("date") else services.local_today()
    anyone = request.args.get("anyone") == "1"
    slots = services.slots_for(
        appointment.service,
        first,
        first + timedelta(days=RESCHEDULE_DAYS - 1),
        staff_ids=None if anyone else [appointment.staff_id],
        honour_window=False,
        exclude_appointment=appointment.id,
    )
    by_day: dict[date, list[Any]] = {}
    for slot in slots:
        by_day.setdefault(_wall(slot.starts_at).date(), []).append(slot)
    names = {u.id: u.display_name for u in appointment.service.staff}
    return render(
        "appointments/reschedule.html",
        "appointments/_reschedule.html",
        appointment=appointment,
        first=first,
        days=[first + timedelta(days=n) for n in range(RESCHEDULE_DAYS)],
        by_day=by_day,
        names=names,
        anyone=anyone,
        prev=first - timedelta(days=RESCHEDULE_DAYS),
        next=first + timedelta(days=RESCHEDULE_DAYS),
        today=services.local_today(),
    )


# --- the card section ----------------------------------------------------------------------


@bp.route("/client/<int:client_id>")
@requires(Permission.APPOINTMENTS_VIEW)
def client_section(client_id: int) -> ResponseReturnValue:
    """The card's appointments, loaded by the card after it is shown (hx-trigger load),
    so the card's own budget does not pay for it."""
    client = get_client_or_404(current_user, client_id)
    return _client_section_page(client)


def _client_section_page(client: Client, notice: str = "") -> ResponseReturnValue:
    found = services.client_appointments(client.id)
    return render(
        "appointments/_client_appointments.html",
        client=client,
        found=found,
        reminders=reminders.reminders_by_appointment(
            a.id for a in (*found.upcoming, *found.recent)
        ),
        reminder_channels=reminders.CHANNEL_LABELS,
        reminder_statuses=reminders.STATUS_LABELS,
        notice=notice,
    )


@bp.route("/client/<int:client_id>/sms-opt-out", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def sms_opt_out(client_id: int) -> ResponseReturnValue:
    """The card's SMS opt-out switch: on cancels the SMS already planned."""
    client = get_client_or_404(current_user, client_id)
    raw = request.form.get("opt_out", "")
    if raw not in ("0", "1"):
        abort(400)
    if raw == "0":
        # Stopping SMS is always allowed; allowing them again uses the data (Art. 18).
        from crm.privacy.restriction import ensure_not_restricted

        ensure_not_restricted(client)
    cancelled = reminders.set_sms_opt_out(client, raw == "1", actor=current_user)
    db.session.commit()
    if raw == "1":
        notice = _("No more SMS to this client. %(count)s planned SMS cancelled.", count=cancelled)
    else:
        notice = _("SMS reminders allowed again for new and moved appointments.")
    if request.headers.get("HX-Request"):
        return _client_section_page(client, notice)
    flash(notice, "success")
    return redirect(url_for("clients.card", client_id=client.id) + "#appointments")


# --- the public SMS stop page -----------------------------------------------------------------


@public
def sms_stop(token: str) -> ResponseReturnValue:
    """/sms/stop/<token>, the link in every SMS. GET shows a button and changes
    nothing (link checkers and previews open links); POST opts the client out."""
    client_id = reminders.client_for_stop_token(token)
    client = db.session.get(Client, client_id) if client_id is not None else None
    if client is None:
        return render("appointments/sms_stop_invalid.html", status=400)
    form = FlaskForm()
    done = client.sms_opt_out_at is not None
    error = ""
    if request.method == "POST":
        if not form.validate_on_submit():
            error = _("The page expired; press the button again.")
        else:
            if not done:
                reminders.set_sms_opt_out(client, True)
                db.session.commit()
            done = True
    return render(
        "appointments/sms_stop.html",
        form=form,
        done=done,
        error=error,
        business=organisation().name,
    )


@bp.record_once
def _public_routes(state: Any) -> None:
    # At the site root (short SMS links), outside the blueprint's /appointments prefix.
    state.app.add_url_rule(
        "/sms/stop/<token>",
        endpoint="appointments.sms_stop",
        view_func=sms_stop,
        methods=["GET", "POST"],
    )


# --- services ------------------------------------------------------------------------------


@bp.route("/services/")
@requires(Permission.APPOINTMENTS_MANAGE)
def service_list() -> ResponseReturnValue:
    return render(
        "appointments/services.html",
        services=services.all_services(),
        usage=services.service_usage(),
        data_labels=CLIENT_DATA_LABELS,
    )


def _spec(form: ServiceForm) -> ServiceSpec:
    return ServiceSpec(
        name=form.name.data or "",
        description=form.description.data or "",
        duration_minutes=form.duration_minutes.data or 0,
        buffer_before_minutes=form.buffer_before_minutes.data or 0,
        buffer_after_minutes=form.buffer_after_minutes.data or 0,
        price=form.parsed_price,
        capacity=form.capacity.data or 1,
        location=form.location.data or "",
        online_url=form.online_url.data or "",
        min_notice_hours=form.min_notice_hours.data or 0,
        max_days_ahead=form.max_days_ahead.data or 1,
        required_data=list(form.required_data.data or []),
        staff_ids=[int(v) for v in form.staff_ids.data or [] if v.isdigit()],
        reminder_channels=list(form.reminder_channels.data or []),
        send_confirmation=bool(form.send_confirmation.data),
        reminder_days_before=_or(form.reminder_days_before.data, 1),
        reminder_hour=_or(form.reminder_hour.data, 18),
        online_booking=bool(form.online_booking.data),
        cancel_cutoff_hours=_or(form.cancel_cutoff_hours.data, 24),
    )


def _or(value: int | None, default: int) -> int:
    # An emptied number field keeps the default rather than meaning 0.
    return default if value is None else int(value)


def _service_form_page(form: ServiceForm, service: Service | None) -> ResponseReturnValue:
    return render("appointments/service_form.html", form=form, service=service)


@bp.route("/services/new", methods=["GET", "POST"])
@requires(Permission.APPOINTMENTS_MANAGE)
def service_create() -> ResponseReturnValue:
    form = ServiceForm()
    if request.method == "GET":
        form.staff_ids.data = [str(current_user.id)]
    if form.validate_on_submit():
        if services.name_taken(form.name.data or ""):
            form.name.errors = [_("A service with this name exists already.")]
        else:
            service = services.save_service(_spec(form))
            db.session.commit()
            flash(_("Service “%(name)s” created.", name=service.name), "success")
            return redirect(url_for("appointments.service_list"))
    return _service_form_page(form, None)


@bp.route("/services/<int:service_id>/edit", methods=["GET", "POST"])
@requires(Permission.APPOINTMENTS_MANAGE)
def service_edit(service_id: int) -> ResponseReturnValue:
    service = services.get_service(service_id)
    if service is None:
        abort(404)
    form = ServiceForm(obj=service)
    if request.method == "GET":
        form.price.data = "" if service.price is None else f"{service.price:.2f}"
        form.staff_ids.data = [str(u.id) for u in service.staff]
        form.required_data.data = list(service.required_data or [])
        form.reminder_channels.data = list(service.reminder_channels or [])
    if form.validate_on_submit():
        if services.name_taken(form.name.data or "", service):
            form.name.errors = [_("A service with this name exists already.")]
        else:
            services.save_service(_spec(form), service)
            db.session.commit()
            flash(_("Service “%(name)s” saved.", name=service.name), "success")
            return redirect(url_for("appointments.service_list"))
    return _service_form_page(form, service)


@bp.route("/services/<int:service_id>/archive", methods=["POST"])
@requires(Permission.APPOINTMENTS_MANAGE)
def service_archive(service_id: int) -> ResponseReturnValue:
    service = services.get_service(service_id)
    if service is None:
        abort(404)
    archive = request.form.get("archive", "1") == "1"
    if not archive and services.name_taken(service.name, service):
        flash(
            _("An active service is named “%(name)s”; rename one first.", name=service.name),
            "error",
        )
        return redirect(url_for("appointments.service_list"))
    services.set_archived(service, archive)
    db.session.commit()
    if archive:
        message = _(
            "“%(name)s” archived: it can no longer be booked; existing appointments stay.",
            name=service.name,
        )
    else:
        message = _("“%(name)s” can be booked again.", name=service.name)
    flash(message, "success")
    return redirect(url_for("appointments.service_list"))


# --- working hours -------------------------------------------------------------------------


def _hours_user(user_id: int | None) -> User:
    """Oneself, or (with the manage permission) anyone."""
    if user_id is None or user_id == current_user.id:
        return current_user._get_current_object()  # type: ignore[attr-defined, no-any-return]
    if not current_user.can(Permission.APPOINTMENTS_MANAGE):
        abort(403)
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


def _hours_page(
    user: User,
    weekly: WeeklyHoursForm | None = None,
    exception: ExceptionForm | None = None,
    block: BlockForm | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    if weekly is None:
        weekly = WeeklyHoursForm(formdata=None)
        for weekday, intervals in services.weekly_hours(user.id).items():
            weekly.day_field(weekday).data = format_intervals(intervals)
    today = services.local_today()
    people = []
    if current_user.can(Permission.APPOINTMENTS_MANAGE):
        people = list(
            db.session.scalars(
                select(User).where(User.active.is_(True)).order_by(User.full_name, User.email)
            )
        )
    return render(
        "appointments/hours.html",
        status=status,
        person=user,
        people=people,
        weekly=weekly,
        exception_form=exception or ExceptionForm(formdata=None),
        block_form=block or BlockForm(formdata=None),
        exceptions=services.exceptions_for(user.id, today),
        blocks=services.blocks_for(user.id, utcnow()),
        weekdays=WEEKDAYS,
        zone_name=services.org_zone().key,
    )


@bp.route("/hours", methods=["GET"])
@requires(Permission.APPOINTMENTS_EDIT)
def hours() -> ResponseReturnValue:
    """One's own hours."""
    return _hours_page(_hours_user(None))


@bp.route("/hours/<int:user_id>", methods=["GET"])
@requires(Permission.APPOINTMENTS_EDIT, Permission.APPOINTMENTS_MANAGE)
def staff_hours(user_id: int) -> ResponseReturnValue:
    """Anyone's hours (the changes below check the same rule per request)."""
    return _hours_page(_hours_user(user_id))


def _hours_url(user: User) -> str:
    if user.id == current_user.id:
        return url_for("appointments.hours")
    return url_for("appointments.staff_hours", user_id=user.id)


@bp.route("/hours/<int:user_id>/weekly", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def save_weekly(user_id: int) -> ResponseReturnValue:
    user = _hours_user(user_id)
    form = WeeklyHoursForm()
    if not form.validate_on_submit():
        return _hours_page(user, weekly=form, status=422)
    services.set_weekly_hours(user.id, form.parsed)
    db.session.commit()
    flash(_("Working hours saved."), "success")
    return redirect(_hours_url(user))


@bp.route("/hours/<int:user_id>/exceptions", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def add_exception(user_id: int) -> ResponseReturnValue:
    user = _hours_user(user_id)
    form = ExceptionForm()
    if not form.validate_on_submit():
        return _hours_page(user, exception=form, status=422)
    kind = ExceptionKind(form.kind.data)
    intervals = form.intervals if kind is ExceptionKind.HOURS else [(None, None)]
    for start, end in intervals:
        services.add_exception(
            user.id, kind, form.start_date.data, form.last_date, start, end, form.note.data or ""
        )
    db.session.commit()
    flash(_("Exception added."), "success")
    return redirect(_hours_url(user))


@bp.route("/hours/<int:user_id>/exceptions/<int:exception_id>/delete", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def delete_exception(user_id: int, exception_id: int) -> ResponseReturnValue:
    from crm.appointments.models import AvailabilityException

    user = _hours_user(user_id)
    row = db.session.get(AvailabilityException, exception_id)
    if row is None or row.user_id != user.id:
        abort(404)
    db.session.delete(row)
    db.session.commit()
    flash(_("Exception removed."), "success")
    return redirect(_hours_url(user))


@bp.route("/hours/<int:user_id>/blocks", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def add_block(user_id: int) -> ResponseReturnValue:
    user = _hours_user(user_id)
    form = BlockForm()
    if form.scope.data == "team" and not current_user.can(Permission.APPOINTMENTS_MANAGE):
        form.scope.errors = [_("Only a manager may block time for everyone.")]
        return _hours_page(user, block=form, status=422)
    if not form.validate_on_submit() or form.interval is None:
        return _hours_page(user, block=form, status=422)
    owner = None if form.scope.data == "team" else user.id
    start, end = form.interval
    if form.kind.data == BlockKind.ONCE.value:
        zone = services.org_zone()
        services.add_block(
            owner,
            BlockKind.ONCE,
            starts_at=to_instant(form.day.data, start, zone),
            ends_at=to_instant(form.day.data, end, zone),
            note=form.note.data or "",
        )
    else:
        services.add_block(
            owner,
            BlockKind.WEEKLY,
            weekday=int(form.weekday.data or 0),
            start_time=start,
            end_time=end,
            note=form.note.data or "",
        )
    db.session.commit()
    flash(_("Time blocked."), "success")
    return redirect(_hours_url(user))


@bp.route("/hours/<int:user_id>/blocks/<int:block_id>/delete", methods=["POST"])
@requires(Permission.APPOINTMENTS_EDIT)
def delete_block(user_id: int, block_id: int) -> ResponseReturnValue:
    from crm.appointments.models import Block

    user = _hours_user(user_id)
    block = db.session.get(Block, block_id)
    if block is None or (block.user_id != user.id and block.user_id is not None):
        abort(404)
    if block.user_id is None and not current_user.can(Permission.APPOINTMENTS_MANAGE):
        abort(403)
    db.session.delete(block)
    db.session.commit()
    flash(_("Block removed."), "success")
    return redirect(_hours_url(user))


from crm.appointments import feeds_views  # noqa: E402, F401  (its routes, on this blueprint)
