"""The data-subject request register: deadlines (GDPR Art. 12(3)), extensions, closing,
deadline tasks for staff, and rectification of a card under a request.

Services change state and flush; the view, CLI command or job commits once. Every
change to the register is written to the audit log in the same transaction.

Dates of the register (received, due, extended until) are calendar days in the
organisation's time zone: "today" is the organisation's today, whatever the server's
clock zone is.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app, has_request_context, session
from flask_babel import force_locale, format_date
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Select, case, func, or_, select
from sqlalchemy.orm import contains_eager, joinedload

from crm.audit.models import AuditEntry
from crm.audit.services import record
from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.extensions import db
from crm.org.services import organisation
from crm.privacy.models import DataRequest, RequestKind, RequestStatus
from crm.sqltypes import utcnow
from crm.tasks.models import Task, TaskOrigin, TaskStatus
from crm.tasks.services import complete_task, create_task

# Art. 12(3): one month to answer, extendable "by two further months".
ANSWER_MONTHS = 1
MAX_EXTENSION_MONTHS = 2
# Staff get a task this many days before a deadline, and another once it has passed.
WARNING_DAYS = 7
# Requests answered within this many days count as "due soon" on the dashboard.
DUE_SOON_DAYS = WARNING_DAYS
REGISTER_PAGE = 50
# Closed requests shown on the client card under the open ones.
CARD_RECENT = 5
# Where the rectification mode lives in the (signed, per-user) session.
RECTIFICATION_KEY = "privacy_rectification"
# Audit actions that change a client's values (crm.clients.views).
CLIENT_CHANGE_ACTIONS = ("client.update",)


def format_day(day: date) -> str:
    """A date for a message, in the reader's (or the forced) locale."""
    return format_date(day, "medium")


class RequestError(Exception):
    """A change the register refuses, with a message for the person and the form field
    it concerns (None: the form as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- dates -----------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """`day` plus whole calendar months; a day the target month lacks becomes that
    month's last day (31 January + 1 month = 28 or 29 February)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_date(received_on: date) -> date:
    """When the answer to a request received on `received_on` is due: one calendar
    month later, clamped to the month's last day (Art. 12(3))."""
    return add_months(received_on, ANSWER_MONTHS)


def latest_extension(original_due_on: date) -> date:
    """The furthest an extension may move the deadline: two months after the
    original due date, with the same clamping."""
    return add_months(original_due_on, MAX_EXTENSION_MONTHS)


def org_zone() -> ZoneInfo:
    try:
        return ZoneInfo(organisation().timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def org_date(now: datetime | None = None) -> date:
    """The organisation's calendar day at the instant `now` (default: now)."""
    moment = now or utcnow()
    if moment.tzinfo is None:
        raise ValueError("naive datetime given; use an aware UTC datetime")
    return moment.astimezone(org_zone()).date()


def deadline_column() -> ColumnElement[date]:
    """SQL: the deadline in force (the extension when there is one)."""
    return func.coalesce(DataRequest.extended_until, DataRequest.due_on)


def urgency(data_request: DataRequest, today: date) -> str:
    """'overdue', 'soon' (within DUE_SOON_DAYS) or '' for an open request; '' once
    closed. Templates colour rows by it."""
    if not data_request.is_open:
        return ""
    if data_request.deadline < today:
        return "overdue"
    if data_request.deadline <= today + timedelta(days=DUE_SOON_DAYS):
        return "soon"
    return ""


# --- reading the register --------------------------------------------------------------


def visible_requests(user: User) -> ColumnElement[bool]:
    """Requests the user may see, for a query that outer-joins DataRequest.client:
    those about a client in the user's scope, and those not (or no longer) matched to
    a client, which concern no record the scope could hide."""
    return or_(DataRequest.client_id.is_(None), visible_clients(user))


def request_query(user: User) -> Select[tuple[DataRequest]]:
    return (
        select(DataRequest)
        .outerjoin(DataRequest.client)
        .options(
            contains_eager(DataRequest.client),
            joinedload(DataRequest.assignee).load_only(*User.display_columns()),
        )
        .where(visible_requests(user))
    )


def get_request(user: User, request_id: int) -> DataRequest | None:
    return db.session.scalar(request_query(user).where(DataRequest.id == request_id))


class StatusFilter:
    """The register's status filter: a status, or 'overdue', or 'all'."""

    OPEN = "open"
    OVERDUE = "overdue"
    DONE = RequestStatus.DONE.value
    REFUSED = RequestStatus.REFUSED.value
    ALL = "all"
    VALUES = (OPEN, OVERDUE, DONE, REFUSED, ALL)


def register_query(
    user: User, *, status: str, kind: str | None, today: date
) -> Select[tuple[DataRequest]]:
    """One view of the register, in display order: open requests by deadline (the
    most urgent first), closed ones newest closed first."""
    stmt = request_query(user)
    if kind:
        stmt = stmt.where(DataRequest.kind == kind)
    deadline = deadline_column()
    if status in (StatusFilter.OPEN, StatusFilter.OVERDUE):
        stmt = stmt.where(DataRequest.status == RequestStatus.OPEN.value)
        if status == StatusFilter.OVERDUE:
            stmt = stmt.where(deadline < today)
        return stmt.order_by(deadline, DataRequest.id)
    if status in (StatusFilter.DONE, StatusFilter.REFUSED):
        stmt = stmt.where(DataRequest.status == status)
        return stmt.order_by(DataRequest.closed_at.desc(), DataRequest.id.desc())
    open_first = DataRequest.status != RequestStatus.OPEN.value
    return stmt.order_by(open_first, deadline, DataRequest.id.desc())


def register_counts(user: User, today: date) -> dict[str, int]:
    """Open and overdue requests the user may see (the tabs' badges), one query."""
    deadline = deadline_column()
    row = db.session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((deadline < today, 1), else_=0)), 0),
        )
        .select_from(DataRequest)
        .outerjoin(DataRequest.client)
        .where(visible_requests(user), DataRequest.status == RequestStatus.OPEN.value)
    ).one()
    return {"open": int(row[0] or 0), "overdue": int(row[1] or 0)}


def open_requests_for_dashboard(user: User, limit: int = 10) -> list[DataRequest]:
    """The most urgent open requests: overdue first, then by deadline."""
    stmt = (
        request_query(user)
        .where(DataRequest.status == RequestStatus.OPEN.value)
        .order_by(deadline_column(), DataRequest.id)
        .limit(limit)
    )
    return list(db.session.scalars(stmt))


@dataclass
class CardRequests:
    open: list[DataRequest]
    recent: list[DataRequest]


def card_requests(client_id: int) -> CardRequests:
    """A client's open requests (by deadline) and the few most recently closed ones,
    in one query."""
    stmt = (
        select(DataRequest)
        .where(DataRequest.client_id == client_id)
        .order_by(
            DataRequest.status != RequestStatus.OPEN.value,
            deadline_column(),
            DataRequest.closed_at.desc(),
            DataRequest.id.desc(),
        )
        .limit(200)
    )
    rows = list(db.session.scalars(stmt))
    open_rows = [r for r in rows if r.is_open]
    closed = sorted(
        (r for r in rows if not r.is_open),
        key=lambda r: (r.closed_at or r.created_at, r.id),
        reverse=True,
    )
    return CardRequests(open=open_rows, recent=closed[:CARD_RECENT])


# --- changing the register -------------------------------------------------------------


@dataclass
class RequestSpec:
    """What the request form gives (validated by crm.privacy.forms)."""

    kind: str
    channel: str
    received_on: date
    requester: str
    client: Client | None
    details: str
    identity_check: str
    assignee_id: int | None


def _clean(text: str | None) -> str:
    return (text or "").replace("\r\n", "\n").strip()


def _requester(spec: RequestSpec) -> str:
    name = " ".join((spec.requester or "").split())[:200]
    if not name and spec.client is not None:
        name = spec.client.display_name[:200]
    return name


def _check_received(received_on: date, today: date) -> None:
    if received_on > today:
        raise RequestError(_("A request cannot be received in the future."), "received_on")


def create_request(spec: RequestSpec, *, by: User, today: date) -> DataRequest:
    """Register a request; its due date is one calendar month after receipt."""
    _check_received(spec.received_on, today)
    requester = _requester(spec)
    if not requester:
        raise RequestError(_("Name who made the request, or choose the client."), "requester")
    data_request = DataRequest(
        kind=RequestKind(spec.kind).value,
        status=RequestStatus.OPEN.value,
        client_id=spec.client.id if spec.client else None,
        subject_ref=spec.client.id if spec.client else None,
        requester=requester,
        channel=spec.channel,
        received_on=spec.received_on,
        details=_clean(spec.details),
        identity_check=_clean(spec.identity_check),
        due_on=due_date(spec.received_on),
        extension_reason="",
        outcome="",
        assignee_id=spec.assignee_id,
        created_by_id=by.id,
    )
    db.session.add(data_request)
    db.session.flush()
    record(
        "request.create",
        target_type="data_request",
        target_id=data_request.id,
        client_id=data_request.client_id,
        details={
            "kind": data_request.kind,
            "channel": data_request.channel,
            "received_on": data_request.received_on,
            "due_on": data_request.due_on,
            "assignee_id": data_request.assignee_id,
        },
        actor=by,
    )
    return data_request


# Text the requester wrote or that names them: the audit log records that these
# changed, not their values, since an entry about a request not matched to a client
# would keep them beyond the client's erasure.
_TEXT_FIELDS = ("requester", "details", "identity_check")


def update_request(data_request: DataRequest, spec: RequestSpec, *, by: User, today: date) -> bool:
    """Edit an open request (e.g. link it to the client once matched). The received
    date moves the due date with it, unless the deadline was extended already.
    Returns whether anything changed."""
    if not data_request.is_open:
        raise RequestError(_("This request is closed; its record can no longer change."))
    _check_received(spec.received_on, today)
    requester = _requester(spec)
    if not requester:
        raise RequestError(_("Name who made the request, or choose the client."), "requester")
    if spec.received_on != data_request.received_on and data_request.extended_until:
        raise RequestError(
            _("The deadline was extended, so the received date can no longer change."),
            "received_on",
        )
    new_values: dict[str, Any] = {
        "kind": RequestKind(spec.kind).value,
        "channel": spec.channel,
        "received_on": spec.received_on,
        "due_on": due_date(spec.received_on),
        "client_id": spec.client.id if spec.client else None,
        "assignee_id": spec.assignee_id,
        "requester": requester,
        "details": _clean(spec.details),
        "identity_check": _clean(spec.identity_check),
    }
    changes: dict[str, list[Any]] = {}
    edited: list[str] = []
    for name, value in new_values.items():
        old = getattr(data_request, name)
        if old == value:
            continue
        if name in _TEXT_FIELDS:
            edited.append(name)
        else:
            changes[name] = [old, value]
        setattr(data_request, name, value)
    if "client_id" in changes:
        # A new match, or a wrong one undone. (An erased client's request keeps its
        # subject_ref: its client_id is NULL already and stays so.)
        data_request.subject_ref = data_request.client_id
    if not changes and not edited:
        return False
    db.session.flush()
    record(
        "request.update",
        target_type="data_request",
        target_id=data_request.id,
        client_id=data_request.client_id,
        details={"changes": changes, **({"edited": edited} if edited else {})},
        actor=by,
    )
    if "due_on" in changes:
        _complete_stale_tasks(data_request)
    return True


def extend_request(
    data_request: DataRequest, *, until: date | None, reason: str, by: User, today: date
) -> None:
    """Extend the deadline (Art. 12(3)): with a reason, no later than two months
    after the original due date, and only while the deadline has not passed (on the
    deadline itself is still in time)."""
    if not data_request.is_open:
        raise RequestError(_("This request is closed; its deadline can no longer change."))
    current = data_request.deadline
    if today > current:
        raise RequestError(
            _(
                "The deadline passed on %(date)s: an extension had to be made before it. "
                "Answer the request now.",
                date=format_day(current),
            )
        )
    reason = _clean(reason)
    if not reason:
        raise RequestError(
            _("Say why more time is needed (the requester must be told the reason)."),
            "reason",
        )
    cap = latest_extension(data_request.due_on)
    if until is None:
        raise RequestError(_("Choose the new deadline."), "until")
    if until <= current:
        raise RequestError(
            _("Choose a date after the current deadline, %(date)s.", date=format_day(current)),
            "until",
        )
    if until > cap:
        raise RequestError(
            _(
                "At most two months after the original due date: %(date)s at the latest.",
                date=format_day(cap),
            ),
            "until",
        )
    data_request.extended_until = until
    data_request.extension_reason = reason
    data_request.extended_at = utcnow()
    db.session.flush()
    record(
        "request.extend",
        target_type="data_request",
        target_id=data_request.id,
        client_id=data_request.client_id,
        details={"deadline": [current, until], "due_on": data_request.due_on, "reason": reason},
        actor=by,
    )
    _complete_stale_tasks(data_request)


CLOSING_STATUSES = (RequestStatus.DONE.value, RequestStatus.REFUSED.value)


def close_request(
    data_request: DataRequest,
    *,
    status: str,
    outcome: str,
    by: User,
    now: datetime | None = None,
) -> int:
    """Close a request as answered (done) or refused, with the outcome in words.
    Its open deadline tasks are completed. Returns how many tasks were completed."""
    if not data_request.is_open:
        raise RequestError(_("This request is closed already."))
    if status not in CLOSING_STATUSES:
        raise RequestError(_("Choose whether the request was answered or refused."), "status")
    outcome = _clean(outcome)
    if not outcome:
        raise RequestError(
            _("Describe the outcome: what was done or why it was refused."), "outcome"
        )
    if status == RequestStatus.DONE.value and not data_request.identity_check:
        raise RequestError(
            _(
                "Record how the requester's identity was checked (edit the request) "
                "before answering it."
            ),
            "status",
        )
    closed_at = now or utcnow()
    today = org_date(closed_at)
    data_request.status = status
    data_request.outcome = outcome
    data_request.closed_at = closed_at
    db.session.flush()
    record(
        "request.close",
        target_type="data_request",
        target_id=data_request.id,
        client_id=data_request.client_id,
        details={
            "status": status,
            "deadline": data_request.deadline,
            "late": today > data_request.deadline,
            "outcome": outcome,
        },
        actor=by,
    )
    finished = 0
    for task in _open_deadline_tasks(data_request.id):
        finished += complete_task(task)
    return finished


# --- deadline tasks --------------------------------------------------------------------


def task_ref(data_request: DataRequest, *, overdue: bool = False) -> str:
    """origin_ref of a deadline task: one per request and deadline (and a separate
    one once that deadline has passed), so an extension gives a new task."""
    ref = f"request:{data_request.id}:{data_request.deadline.isoformat()}"
    return f"{ref}:overdue" if overdue else ref


def _ref_prefix(request_id: int) -> str:
    return f"request:{request_id}:"


def _request_id_of(origin_ref: str | None) -> int | None:
    """The request id in a deadline task's origin_ref ("request:<id>:...")."""
    parts = (origin_ref or "").split(":")
    return (
        int(parts[1]) if len(parts) > 2 and parts[0] == "request" and parts[1].isdigit() else None
    )


def _open_deadline_tasks(request_id: int) -> list[Task]:
    stmt = select(Task).where(
        Task.origin == TaskOrigin.DATA_REQUEST.value,
        Task.status == TaskStatus.OPEN.value,
        Task.origin_ref.startswith(_ref_prefix(request_id), autoescape=True),
    )
    return list(db.session.scalars(stmt))


def _complete_stale_tasks(data_request: DataRequest) -> int:
    """Complete open tasks about a deadline the request no longer has."""
    current = (task_ref(data_request), task_ref(data_request, overdue=True))
    finished = 0
    for task in _open_deadline_tasks(data_request.id):
        if task.origin_ref not in current:
            finished += complete_task(task)
    return finished


def _kind_label(kind: str) -> str:
    from crm.privacy.forms import KIND_NAMES

    return str(KIND_NAMES.get(kind, kind))


def deadline_task_texts(data_request: DataRequest, *, overdue: bool) -> tuple[str, str]:
    """Title and details of a deadline task, in the organisation's language."""
    with force_locale(organisation().default_locale or "en"):
        values = {
            "kind": _kind_label(data_request.kind),
            "number": data_request.id,
            "date": format_day(data_request.deadline),
        }
        if overdue:
            title = _("Overdue: answer data request #%(number)s (%(kind)s), due %(date)s", **values)
        else:
            title = _("Answer data request #%(number)s (%(kind)s) by %(date)s", **values)
        lines = [
            _(
                "Received on %(received)s; the answer is due on %(date)s.",
                received=format_day(data_request.received_on),
                date=format_day(data_request.deadline),
            )
        ]
        if data_request.extended_until is None and not overdue:
            lines.append(
                _(
                    "If more time is needed, extend the deadline before it passes, "
                    "with the reason (at most two more months)."
                )
            )
        lines.append(_("Close the request with its outcome once it is answered."))
        lines.append(request_url(data_request.id))
    return title, "\n".join(lines)


def request_url(request_id: int) -> str:
    """The absolute link to a request's page (jobs have no request to build it from)."""
    path = current_app.url_map.bind("localhost").build(
        "privacy.request", {"request_id": request_id}
    )
    return current_app.config["CRM_BASE_URL"].rstrip("/") + path


def _active_users(ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(db.session.scalars(select(User.id).where(User.id.in_(ids), User.active.is_(True))))


def task_assignee(data_request: DataRequest, active: set[int]) -> int | None:
    """Who answers: the request's assignee, else whoever registered it, else the
    client's owner, skipping anyone deactivated."""
    owner_id = data_request.client.owner_id if data_request.client else None
    for candidate in (data_request.assignee_id, data_request.created_by_id, owner_id):
        if candidate is not None and candidate in active:
            return candidate
    return None


@dataclass
class DeadlineResult:
    warned: int = 0
    overdue: int = 0
    completed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"warned": self.warned, "overdue": self.overdue, "completed": self.completed}


def sync_deadline_tasks(now: datetime | None = None) -> DeadlineResult:
    """The periodic deadline job: for every open request whose deadline is within
    WARNING_DAYS, one open task; once the deadline has passed, an overdue task (the
    warning task, if still open, becomes it, so there are never two open tasks for
    one request and deadline). A task for an earlier deadline (before an extension)
    is completed. Idempotent: every task is found again by its origin_ref."""
    today = org_date(now)
    horizon = today + timedelta(days=WARNING_DAYS)
    result = DeadlineResult()
    requests = list(
        db.session.scalars(
            select(DataRequest)
            .options(joinedload(DataRequest.client))
            .where(
                DataRequest.status == RequestStatus.OPEN.value,
                deadline_column() <= horizon,
            )
            .order_by(DataRequest.id)
        )
    )
    if not requests:
        return result
    # Two queries for every request in the window: the tasks of their current
    # deadlines (open or done), and every open deadline task (to complete stale ones).
    current_refs = {ref for r in requests for ref in (task_ref(r), task_ref(r, overdue=True))}
    tasks_by_ref: dict[str, Task] = {}
    for task in db.session.scalars(
        select(Task).where(
            Task.origin == TaskOrigin.DATA_REQUEST.value, Task.origin_ref.in_(current_refs)
        )
    ):
        # An open task wins over a completed one with the same reference.
        if task.origin_ref not in tasks_by_ref or task.is_open:
            tasks_by_ref[task.origin_ref or ""] = task
    window_ids = {r.id for r in requests}
    for task in db.session.scalars(
        select(Task).where(
            Task.origin == TaskOrigin.DATA_REQUEST.value,
            Task.status == TaskStatus.OPEN.value,
            Task.origin_ref.not_in(current_refs),
        )
    ):
        request_id = _request_id_of(task.origin_ref)
        if request_id in window_ids:
            result.completed += complete_task(task)
    candidates: set[int] = set()
    for r in requests:
        candidates.update(
            i
            for i in (r.assignee_id, r.created_by_id, r.client.owner_id if r.client else None)
            if i is not None
        )
    active = _active_users(candidates)
    for data_request in requests:
        warn_ref = task_ref(data_request)
        overdue_ref = task_ref(data_request, overdue=True)
        if data_request.deadline >= today:
            if warn_ref in tasks_by_ref:
                continue  # open, or done by staff: either way not again
            title, details = deadline_task_texts(data_request, overdue=False)
            _new_task(data_request, title, details, warn_ref, active)
            result.warned += 1
            continue
        if overdue_ref in tasks_by_ref:
            continue
        title, details = deadline_task_texts(data_request, overdue=True)
        warning = tasks_by_ref.get(warn_ref)
        if warning is not None and warning.is_open:
            # The person already has the task: it says "overdue" now.
            warning.origin_ref = overdue_ref
            warning.title = title
            warning.details = details
        else:
            _new_task(data_request, title, details, overdue_ref, active)
        result.overdue += 1
    db.session.flush()
    if result.warned or result.overdue or result.completed:
        record("request.deadlines", details={"today": today, **result.as_dict()})
    return result


def _new_task(
    data_request: DataRequest, title: str, details: str, ref: str, active: set[int]
) -> Task:
    return create_task(
        title,
        assignee_id=task_assignee(data_request, active),
        client_id=data_request.client_id,
        details=details,
        due_date=data_request.deadline,
        origin=TaskOrigin.DATA_REQUEST,
        origin_ref=ref,
    )


# --- rectification under a request -----------------------------------------------------


def _rectification_map() -> dict[str, int]:
    if not has_request_context():
        return {}
    value = session.get(RECTIFICATION_KEY)
    return dict(value) if isinstance(value, dict) else {}


def rectification_request_id(client_id: int) -> int | None:
    """The request the current user is rectifying this client's card under, as the
    session says (no query: the card shows the banner from this alone)."""
    value = _rectification_map().get(str(client_id))
    return value if isinstance(value, int) else None


def start_rectification(data_request: DataRequest) -> None:
    if not data_request.is_open:
        raise RequestError(_("This request is closed; the card can no longer be edited under it."))
    if data_request.kind != RequestKind.RECTIFICATION.value:
        raise RequestError(_("Only a rectification request edits the card under it."))
    if data_request.client_id is None:
        raise RequestError(_("Link the request to the client first."))
    mapping = _rectification_map()
    mapping[str(data_request.client_id)] = data_request.id
    session[RECTIFICATION_KEY] = mapping


def finish_rectification(client_id: int) -> int | None:
    """End the mode for this client; returns the request it was under."""
    mapping = _rectification_map()
    request_id = mapping.pop(str(client_id), None)
    if mapping:
        session[RECTIFICATION_KEY] = mapping
    else:
        session.pop(RECTIFICATION_KEY, None)
    return request_id if isinstance(request_id, int) else None


def under_request(client_id: int, details: dict[str, Any]) -> dict[str, Any]:
    """Audit details of a change to a client's card, with "request_id" added while the
    user is rectifying this card under a request (crm.clients.views calls it). A mode
    left over from a request closed meanwhile, or moved to another client, ends here."""
    request_id = rectification_request_id(client_id)
    if request_id is None:
        return details
    still = db.session.scalar(
        select(DataRequest.id).where(
            DataRequest.id == request_id,
            DataRequest.client_id == client_id,
            DataRequest.status == RequestStatus.OPEN.value,
        )
    )
    if still is None:
        finish_rectification(client_id)
        return details
    return {**details, "request_id": request_id}


@dataclass
class RectificationChange:
    entry: AuditEntry
    changes: dict[str, list[Any]]


def changes_under_request(data_request: DataRequest) -> list[RectificationChange]:
    """The card changes made under this request, oldest first, each with its diff
    {field: [before, after]}, from the audit log."""
    client_ref = data_request.client_id or data_request.subject_ref
    if client_ref is None:
        return []
    stmt = (
        select(AuditEntry)
        .where(
            AuditEntry.client_id == client_ref,
            AuditEntry.action.in_(CLIENT_CHANGE_ACTIONS),
            AuditEntry.created_at >= data_request.created_at - timedelta(seconds=1),
        )
        .order_by(AuditEntry.id)
    )
    found = []
    for entry in db.session.scalars(stmt):
        details = entry.details or {}
        if details.get("request_id") == data_request.id:
            found.append(RectificationChange(entry, dict(details.get("changes") or {})))
    return found


def deadline_tasks(request_id: int) -> list[Task]:
    """The deadline tasks of a request, newest first (shown on its page)."""
    stmt = (
        select(Task)
        .options(joinedload(Task.assignee).load_only(*User.display_columns()))
        .where(
            Task.origin == TaskOrigin.DATA_REQUEST.value,
            Task.origin_ref.startswith(_ref_prefix(request_id), autoescape=True),
        )
        .order_by(Task.id.desc())
    )
    return list(db.session.scalars(stmt))


def change_labels() -> dict[str, str]:
    """Labels for the field names of an audit diff: core columns and "cf:<key>"."""
    from crm.fields.services import active_fields
    from crm.search.fields import CORE

    labels = {core.column: str(core.label) for core in CORE}
    labels.update({f"cf:{field.key}": field.label for field in active_fields()})
    return labels
