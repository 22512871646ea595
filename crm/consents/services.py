"""The consent ledger. Services change state and flush; the caller commits once.

Every service that depends on the time takes `now` (aware UTC; default: the current
time), so tests walk the clock forward instead of sleeping.

Writes to one client's consent for one purpose are serialised, so the order of event
ids is the order in which the state changed (the rebuild relies on it): SQLite takes
the database write lock before reading the state; PostgreSQL takes an advisory lock on
(client, purpose) and the state row `FOR UPDATE`, which the expiry sweep also locks.
"""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app, has_request_context, request
from flask_babel import force_locale, format_date
from flask_babel import gettext as _
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import (
    ColumnElement,
    Date,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import aliased

from crm.audit.services import changes_details, record
from crm.auth.models import User
from crm.clients.models import Client
from crm.consents.models import (
    AnonymisedClient,
    Channel,
    ConsentEvent,
    ConsentNotice,
    ConsentPurpose,
    ConsentRenewal,
    ConsentState,
    ConsentStatus,
    EventKind,
    LegalBasis,
    Method,
    RetentionAction,
)
from crm.extensions import db
from crm.org.services import organisation
from crm.queue import enqueue_after_commit
from crm.sqltypes import UTCDateTime, utcnow
from crm.tasks.models import Task, TaskOrigin, TaskStatus
from crm.text import fold
from crm.web.client_ip import client_ip, parse_address

DEFAULT_VALIDITY_MONTHS = 24
DEFAULT_WARNING_DAYS = 30
EVENT_PAGE = 10
RENEWAL_DAYS = 30
RENEWAL_SALT = "crm.consents.renewal"
# Names the PostgreSQL advisory lock of the expiry sweep ("CNST").
SWEEP_LOCK_KEY = 0x434E5354
ANONYMISE_BATCH = 200
# INSERT ... SELECT reports its row count only when asked to (psycopg: -1 otherwise).
COUNTED = {"preserve_rowcount": True}

# Which events may follow which state. EXPIRED is the sweep's alone.
STAFF_KINDS = (
    EventKind.GIVEN,
    EventKind.RENEWED,
    EventKind.REFUSED,
    EventKind.WITHDRAWN,
    EventKind.INVALIDATED,
)
STATUS_AFTER = {
    EventKind.GIVEN: ConsentStatus.GIVEN,
    EventKind.RENEWED: ConsentStatus.GIVEN,
    EventKind.REFUSED: ConsentStatus.REFUSED,
    EventKind.WITHDRAWN: ConsentStatus.WITHDRAWN,
    EventKind.EXPIRED: ConsentStatus.EXPIRED,
    EventKind.INVALIDATED: ConsentStatus.INVALIDATED,
}


class ConsentError(ValueError):
    """An event that cannot follow the current state, or bad input; the message is
    shown to the user."""


# --- small helpers ---------------------------------------------------------------------


def now_utc(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("naive datetime given; use an aware UTC datetime")
    return now.astimezone(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus whole calendar months; the 31st becomes the month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def truncate_ip(value: str | None) -> str:
    """The address with its host part cut off (IPv4 /24, IPv6 /48): enough to show
    where a request came from, not enough to name a household."""
    address = parse_address(value)
    if address is None:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def content_hash(text_: str) -> str:
    return hashlib.sha256(text_.encode("utf-8")).hexdigest()


def clean_notice(text_: str | None) -> str:
    """Notice text as stored: one kind of line break, no trailing blanks."""
    lines = (text_ or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def is_valid(status: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a state counts at `now`: given, and not past its expiry. The expiry time
    itself decides, not whether the sweep has recorded the expiry yet."""
    return status == ConsentStatus.GIVEN.value and (expires_at is None or expires_at > now)


def valid_condition(now: datetime) -> ColumnElement[bool]:
    """`is_valid` as SQL on consent_states."""
    return and_(
        ConsentState.status == ConsentStatus.GIVEN.value,
        or_(ConsentState.expires_at.is_(None), ConsentState.expires_at > now),
    )


@dataclass
class Evidence:
    """Where an event was recorded from."""

    source_url: str = ""
    user_agent: str = ""
    ip: str = ""

    @classmethod
    def from_request(cls) -> Evidence:
        if not has_request_context():
            return cls()
        # htmx names the page the user was on; the request URL is only the fragment.
        page = request.headers.get("HX-Current-URL") or request.url
        return cls(
            source_url=page[:500],
            user_agent=(request.user_agent.string or "")[:300],
            ip=truncate_ip(client_ip()),
        )


# --- purposes and notices --------------------------------------------------------------


@dataclass
class PurposeSpec:
    name: str
    legal_basis: LegalBasis
    retention_months: int
    retention_action: RetentionAction = RetentionAction.REVIEW
    validity_months: int | None = DEFAULT_VALIDITY_MONTHS
    warning_days: int = DEFAULT_WARNING_DAYS
    channels: list[str] = field(default_factory=list)
    description: str = ""
    legitimate_interest: str = ""
    data_categories: str = ""
    recipients: str = ""
    key: str = ""


AUDITED_PURPOSE_FIELDS = (
    "name",
    "description",
    "legal_basis",
    "legitimate_interest",
    "data_categories",
    "recipients",
    "channels",
    "retention_months",
    "retention_action",
    "validity_months",
    "warning_days",
)


def make_key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", fold(name)).strip("_")[:48]
    return key or "purpose"


def _unique_key(wanted: str, exclude_id: int | None = None) -> str:
    key, n = wanted, 1
    while True:
        stmt = select(ConsentPurpose.id).where(ConsentPurpose.key == key)
        if exclude_id is not None:
            stmt = stmt.where(ConsentPurpose.id != exclude_id)
        if db.session.scalar(stmt) is None:
            return key
        n += 1
        key = f"{wanted[:44]}_{n}"


def check_spec(spec: PurposeSpec) -> None:
    """The register's rules; ConsentError names what is wrong."""
    if not spec.name.strip():
        raise ConsentError(_("A purpose needs a name."))
    if spec.retention_months < 1:
        raise ConsentError(_("The retention period must be at least one month."))
    if spec.legal_basis == LegalBasis.CONSENT and not spec.validity_months:
        raise ConsentError(_("Consent needs a validity period."))
    if spec.legal_basis == LegalBasis.LEGITIMATE_INTEREST and not spec.legitimate_interest.strip():
        raise ConsentError(_("Name the legitimate interest pursued."))
    if spec.validity_months and spec.warning_days >= spec.validity_months * 28:
        raise ConsentError(_("The warning must come before the consent expires."))
    unknown = set(spec.channels) - {c.value for c in Channel}
    if unknown:
        raise ConsentError(_("Unknown channel: %(name)s", name=", ".join(sorted(unknown))))


def _apply_spec(purpose: ConsentPurpose, spec: PurposeSpec) -> dict[str, tuple[Any, Any]]:
    values: dict[str, Any] = {
        "name": " ".join(spec.name.split())[:200],
        "description": spec.description.strip(),
        "legal_basis": LegalBasis(spec.legal_basis).value,
        # The interest is recorded for point (f) only.
        "legitimate_interest": spec.legitimate_interest.strip()
        if spec.legal_basis == LegalBasis.LEGITIMATE_INTEREST
        else "",
        "data_categories": spec.data_categories.strip(),
        "recipients": spec.recipients.strip(),
        "channels": [c.value for c in Channel if c.value in set(spec.channels)],
        "retention_months": int(spec.retention_months),
        "retention_action": RetentionAction(spec.retention_action).value,
        "validity_months": int(spec.validity_months) if spec.validity_months else None,
        "warning_days": int(spec.warning_days),
    }
    changes = {}
    for name, new in values.items():
        old = getattr(purpose, name, None)
        if old != new:
            changes[name] = (old, new)
            setattr(purpose, name, new)
    return changes


def latest_notices(purpose_id: int) -> dict[str, ConsentNotice]:
    """The newest version per language."""
    newest = (
        select(ConsentNotice.language, func.max(ConsentNotice.version).label("version"))
        .where(ConsentNotice.purpose_id == purpose_id)
        .group_by(ConsentNotice.language)
        .subquery()
    )
    stmt = select(ConsentNotice).join(
        newest,
        and_(
            ConsentNotice.language == newest.c.language,
            ConsentNotice.version == newest.c.version,
        ),
    )
    stmt = stmt.where(ConsentNotice.purpose_id == purpose_id)
    return {n.language: n for n in db.session.scalars(stmt)}


def notice_versions(purpose_id: int) -> list[ConsentNotice]:
    """Every version, by language, newest first."""
    stmt = (
        select(ConsentNotice)
        .where(ConsentNotice.purpose_id == purpose_id)
        .order_by(ConsentNotice.language, ConsentNotice.version.desc())
    )
    return list(db.session.scalars(stmt))


def set_notices(
    purpose: ConsentPurpose, texts: dict[str, str], by: User | None, now: datetime | None = None
) -> list[ConsentNotice]:
    """A new version for every language whose text differs from its newest version.
    An empty text changes nothing: the last version stays in force."""
    now = now_utc(now)
    current = latest_notices(purpose.id) if purpose.id else {}
    added = []
    for language, raw in texts.items():
        body = clean_notice(raw)
        if not body:
            continue
        digest = content_hash(body)
        previous = current.get(language)
        if previous is not None and previous.content_hash == digest:
            continue
        notice = ConsentNotice(
            purpose_id=purpose.id,
            language=language,
            version=(previous.version + 1) if previous else 1,
            text=body,
            content_hash=digest,
            created_at=now,
            created_by_id=by.id if by else None,
        )
        db.session.add(notice)
        added.append(notice)
    db.session.flush()
    return added


def _notice_details(notices: Sequence[ConsentNotice]) -> list[dict[str, Any]]:
    return [{"language": n.language, "version": n.version, "hash": n.content_hash} for n in notices]


def create_purpose(
    spec: PurposeSpec, notices: dict[str, str], by: User | None, now: datetime | None = None
) -> ConsentPurpose:
    """A new purpose with its first notice versions (at least one is required)."""
    now = now_utc(now)
    check_spec(spec)
    if not any(clean_notice(t) for t in notices.values()):
        raise ConsentError(_("Write the notice text in at least one language."))
    purpose = ConsentPurpose(
        key=_unique_key(make_key(spec.key or spec.name)), created_at=now, updated_at=now
    )
    changes = _apply_spec(purpose, spec)
    db.session.add(purpose)
    db.session.flush()
    added = set_notices(purpose, notices, by, now)
    record(
        "purpose.create",
        target_type="purpose",
        target_id=purpose.id,
        details={"key": purpose.key, **changes_details(changes), "notices": _notice_details(added)},
        actor=by,
    )
    return purpose


def update_purpose(
    purpose: ConsentPurpose,
    spec: PurposeSpec,
    notices: dict[str, str],
    by: User | None,
    now: datetime | None = None,
) -> tuple[dict[str, tuple[Any, Any]], list[ConsentNotice]]:
    """Change the purpose; changed notice texts become new versions. Audited."""
    now = now_utc(now)
    check_spec(spec)
    changes = _apply_spec(purpose, spec)
    added = set_notices(purpose, notices, by, now)
    if changes:
        purpose.updated_at = now
    db.session.flush()
    if changes or added:
        record(
            "purpose.update",
            target_type="purpose",
            target_id=purpose.id,
            details={
                "key": purpose.key,
                **changes_details(changes),
                "notices": _notice_details(added),
            },
            actor=by,
        )
    return changes, added


def archive_purpose(purpose: ConsentPurpose, by: User | None, now: datetime | None = None) -> None:
    """Stop using a purpose: may_contact answers no, the card stops offering it. Its
    events and register entry stay."""
    if purpose.archived_at is None:
        purpose.archived_at = now_utc(now)
        db.session.flush()
        record("purpose.archive", target_type="purpose", target_id=purpose.id, actor=by)


def restore_purpose(purpose: ConsentPurpose, by: User | None) -> None:
    if purpose.archived_at is not None:
        purpose.archived_at = None
        db.session.flush()
        record("purpose.restore", target_type="purpose", target_id=purpose.id, actor=by)


def all_purposes() -> list[ConsentPurpose]:
    """Active purposes by name, then archived ones."""
    stmt = select(ConsentPurpose).order_by(
        ConsentPurpose.archived_at.is_not(None), ConsentPurpose.name, ConsentPurpose.id
    )
    return list(db.session.scalars(stmt))


def active_purposes() -> list[ConsentPurpose]:
    stmt = (
        select(ConsentPurpose)
        .where(ConsentPurpose.archived_at.is_(None))
        .order_by(ConsentPurpose.name, ConsentPurpose.id)
    )
    return list(db.session.scalars(stmt))


def find_purpose(ref: ConsentPurpose | int | str) -> ConsentPurpose | None:
    if isinstance(ref, ConsentPurpose):
        return ref
    if isinstance(ref, int):
        return db.session.get(ConsentPurpose, ref)
    return db.session.scalar(select(ConsentPurpose).where(ConsentPurpose.key == ref))


# --- events and the state --------------------------------------------------------------


def _lock_state(client_id: int, purpose_id: int) -> ConsentState | None:
    """Serialise writers of this client's consent for this purpose (module docstring)."""
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        # Two int4 keys: a key space of its own, apart from the one-bigint locks.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": client_id, "b": purpose_id}
        )
    elif connection.dialect.name == "sqlite":
        connection.execute(text("DELETE FROM consent_renewals WHERE 1 = 0"))
    stmt = (
        select(ConsentState)
        .where(ConsentState.client_id == client_id, ConsentState.purpose_id == purpose_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.scalar(stmt)


def _check_transition(kind: EventKind, state: ConsentState | None, now: datetime) -> None:
    valid = state is not None and is_valid(state.status, state.expires_at, now)
    if kind == EventKind.RENEWED and (
        state is None
        or state.status not in (ConsentStatus.GIVEN.value, ConsentStatus.EXPIRED.value)
    ):
        raise ConsentError(_("There is no consent to renew; record it as given."))
    if kind in (EventKind.WITHDRAWN, EventKind.INVALIDATED) and not valid:
        raise ConsentError(_("There is no valid consent for this purpose."))
    if kind == EventKind.REFUSED and valid:
        raise ConsentError(_("The consent is valid: withdraw it instead."))


def _close_expiry_task(client_id: int, basis_event_id: int | None, now: datetime) -> None:
    """The expiry warning about a consent is settled once anything replaces it."""
    if basis_event_id is None:
        return
    db.session.execute(
        update(Task)
        .where(
            Task.client_id == client_id,
            Task.origin == TaskOrigin.CONSENT_EXPIRY.value,
            Task.origin_ref == f"consent:{basis_event_id}",
            Task.status == TaskStatus.OPEN.value,
        )
        .values(status=TaskStatus.DONE.value, completed_at=now)
        .execution_options(synchronize_session=False)
    )


def record_event(
    client_id: int,
    purpose: ConsentPurpose,
    kind: EventKind,
    method: Method,
    *,
    notice: ConsentNotice | None = None,
    actor: User | None = None,
    evidence: Evidence | None = None,
    note: str = "",
    now: datetime | None = None,
) -> ConsentEvent:
    """Append one event and update the state in the same transaction; audited.

    Given, renewed and refused name the notice version the client was shown; a
    withdrawal or invalidation refers to the notice of the consent it ends."""
    now = now_utc(now)
    kind, method = EventKind(kind), Method(method)
    if kind not in STAFF_KINDS or method == Method.SYSTEM:
        raise ConsentError(_("Expiry is recorded by the CRM itself."))
    if purpose.is_archived and kind in (EventKind.GIVEN, EventKind.RENEWED):
        raise ConsentError(_("This purpose is archived."))
    state = _lock_state(client_id, purpose.id)
    _check_transition(kind, state, now)
    if kind in (EventKind.GIVEN, EventKind.RENEWED, EventKind.REFUSED):
        if notice is None or notice.purpose_id != purpose.id:
            raise ConsentError(_("Choose the notice text the client was given."))
        notice_id: int | None = notice.id
    else:
        notice_id = state.notice_id if state is not None else None
    expires_at = None
    if kind in (EventKind.GIVEN, EventKind.RENEWED) and purpose.validity_months:
        expires_at = add_months(now, purpose.validity_months)
    evidence = evidence or Evidence()
    event = ConsentEvent(
        client_id=client_id,
        purpose_id=purpose.id,
        notice_id=notice_id,
        kind=kind.value,
        method=method.value,
        actor_id=actor.id if actor else None,
        occurred_at=now,
        recorded_at=now,
        expires_at=expires_at,
        source_url=evidence.source_url[:500],
        user_agent=evidence.user_agent[:300],
        ip=evidence.ip[:45],
        note=" ".join(note.split())[:500],
    )
    db.session.add(event)
    db.session.flush()
    previous_basis = state.basis_event_id if state is not None else None
    if state is None:
        state = ConsentState(client_id=client_id, purpose_id=purpose.id)
        db.session.add(state)
    status = STATUS_AFTER[kind]
    state.status = status.value
    state.since = now
    state.expires_at = expires_at
    state.notice_id = notice_id
    state.updated_at = now
    if status == ConsentStatus.GIVEN:
        state.basis_event_id, state.warned_at, state.ended_at = event.id, None, None
    else:
        state.basis_event_id, state.warned_at, state.ended_at = None, None, now
    db.session.flush()
    _close_expiry_task(client_id, previous_basis, now)
    record(
        f"consent.{kind.value}",
        target_type="consent_event",
        target_id=event.id,
        client_id=client_id,
        details={
            "purpose": purpose.key,
            "method": method.value,
            "notice": _notice_details([notice])[0] if notice is not None else None,
            "expires_at": expires_at,
        },
        actor=actor,
    )
    return event


# --- the card's panel ------------------------------------------------------------------


@dataclass
class PurposeRow:
    purpose: ConsentPurpose
    state: ConsentState | None
    valid: bool
    expiring: bool  # valid, and inside the purpose's warning window


@dataclass
class EventRow:
    id: int
    purpose_id: int
    kind: str
    method: str
    occurred_at: datetime
    recorded_at: datetime
    expires_at: datetime | None
    source_url: str
    user_agent: str
    ip: str
    note: str
    notice_id: int | None
    notice_language: str | None
    notice_version: int | None
    actor_name: str | None


@dataclass
class Panel:
    rows: list[PurposeRow]
    events: list[EventRow]
    more: int | None  # the id to page older events from, when there are any
    names: dict[int, str]


def purpose_rows(client_id: int, now: datetime | None = None) -> list[PurposeRow]:
    """Every active purpose, and archived ones the client has a state for: one query."""
    now = now_utc(now)
    stmt = (
        select(ConsentPurpose, ConsentState)
        .outerjoin(
            ConsentState,
            and_(ConsentState.purpose_id == ConsentPurpose.id, ConsentState.client_id == client_id),
        )
        .where(or_(ConsentPurpose.archived_at.is_(None), ConsentState.id.is_not(None)))
        .order_by(ConsentPurpose.archived_at.is_not(None), ConsentPurpose.name, ConsentPurpose.id)
    )
    rows = []
    for purpose, state in db.session.execute(stmt).tuples():
        valid = state is not None and is_valid(state.status, state.expires_at, now)
        expiring = bool(
            valid
            and state is not None
            and state.expires_at is not None
            and state.expires_at - timedelta(days=purpose.warning_days) <= now
        )
        rows.append(PurposeRow(purpose, state, valid, expiring))
    return rows


def event_page(
    client_id: int, before: int | None = None, limit: int = EVENT_PAGE
) -> tuple[list[EventRow], int | None]:
    """The client's events, newest first, with notice version and actor: one query.
    Returns the page and the id to continue from when older events remain."""
    stmt = (
        select(
            ConsentEvent.id,
            ConsentEvent.purpose_id,
            ConsentEvent.kind,
            ConsentEvent.method,
            ConsentEvent.occurred_at,
            ConsentEvent.recorded_at,
            ConsentEvent.expires_at,
            ConsentEvent.source_url,
            ConsentEvent.user_agent,
            ConsentEvent.ip,
            ConsentEvent.note,
            ConsentEvent.notice_id,
            ConsentNotice.language,
            ConsentNotice.version,
            func.coalesce(func.nullif(User.full_name, ""), User.email),
        )
        .outerjoin(ConsentNotice, ConsentNotice.id == ConsentEvent.notice_id)
        .outerjoin(User, User.id == ConsentEvent.actor_id)
        .where(ConsentEvent.client_id == client_id)
        .order_by(ConsentEvent.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(ConsentEvent.id < before)
    rows = [EventRow(*row) for row in db.session.execute(stmt)]
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


def consent_panel(client_id: int, now: datetime | None = None) -> Panel:
    """What the card's consent section shows, in two queries."""
    rows = purpose_rows(client_id, now)
    events, more = event_page(client_id)
    return Panel(rows, events, more, {row.purpose.id: row.purpose.name for row in rows})


def purpose_names(ids: Iterable[int]) -> dict[int, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    stmt = select(ConsentPurpose.id, ConsentPurpose.name).where(ConsentPurpose.id.in_(wanted))
    return {purpose_id: name for purpose_id, name in db.session.execute(stmt)}


# --- the expiry sweep ------------------------------------------------------------------


@dataclass
class SweepResult:
    expired: int = 0
    warned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"expired": self.expired, "warned": self.warned}


def _serialise_sweep() -> None:
    """One sweep at a time (the scheduler, and a `jobs run-periodic` by hand)."""
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        connection.execute(text("DELETE FROM consent_renewals WHERE 1 = 0"))


def expire_due(now: datetime) -> int:
    """Record an "expired" event for every given consent whose expiry has passed, and
    mark those states expired: two statements, whatever the number of rows."""
    states = ConsentState.__table__
    due = and_(
        states.c.status == ConsentStatus.GIVEN.value,
        states.c.expires_at.is_not(None),
        states.c.expires_at <= now,
    )
    source = (
        select(
            states.c.client_id,
            states.c.purpose_id,
            states.c.notice_id,
            literal(EventKind.EXPIRED.value, String),
            literal(Method.SYSTEM.value, String),
            states.c.expires_at,  # occurred: when it ran out, not when we noticed
            literal(now, UTCDateTime()),
            states.c.expires_at,
            literal("", String),
            literal("", String),
            literal("", String),
            literal("", String),
        )
        .where(due)
        .order_by(states.c.id)
        # PostgreSQL: lock the rows, so a concurrent renewal waits and then sees them
        # expired (or was first, and then they no longer match).
        .with_for_update(of=states)
    )
    events = ConsentEvent.__table__
    columns = [
        "client_id",
        "purpose_id",
        "notice_id",
        "kind",
        "method",
        "occurred_at",
        "recorded_at",
        "expires_at",
        "source_url",
        "user_agent",
        "ip",
        "note",
    ]
    inserted = db.session.execute(
        insert(events).from_select([events.c[name] for name in columns], source),
        execution_options=COUNTED,
    ).rowcount
    db.session.execute(
        update(states)
        .where(due)
        .values(
            status=ConsentStatus.EXPIRED.value,
            since=states.c.expires_at,
            ended_at=states.c.expires_at,
            basis_event_id=null(),
            warned_at=null(),
            updated_at=now,
        )
    )
    return max(inserted or 0, 0)


def _date_of(column: Any) -> ColumnElement[Any]:
    """The UTC date of a timestamp column, in SQL."""
    if db.session.get_bind().dialect.name == "sqlite":
        return func.date(column)
    return cast(column, Date)


def warning_texts(purpose: ConsentPurpose) -> tuple[str, str]:
    """The expiry task's title and details, in the organisation's language."""
    with force_locale(organisation().default_locale or "en"):
        title = _("Consent expires: %(purpose)s — renew or delete", purpose=purpose.name)
        details = _(
            "The client's consent for “%(purpose)s” runs out on the due date. Send a "
            "renewal request (on this task or the client's card), or delete the data kept "
            "only for this purpose. From the expiry on, the consent no longer counts.",
            purpose=purpose.name,
        )
    return title[:200], details


def warn_expiring(now: datetime) -> int:
    """One open task per consent entering its purpose's warning window, for the
    client's owner. Idempotent twice over: the state remembers the warning (warned_at),
    and the insert skips a consent that already has a task (origin_ref names the
    given/renewed event). One INSERT ... SELECT and one UPDATE for all purposes: each
    purpose's window end (and task title) is a CASE on the purpose, inside one index
    range up to the furthest window end."""
    states, tasks, clients = ConsentState.__table__, Task.__table__, Client.__table__
    purposes = db.session.scalars(
        select(ConsentPurpose).where(
            ConsentPurpose.archived_at.is_(None), ConsentPurpose.validity_months.is_not(None)
        )
    ).all()
    if not purposes:
        return 0
    ends = {p.id: now + timedelta(days=p.warning_days) for p in purposes}
    texts = {p.id: warning_texts(p) for p in purposes}

    def per_purpose(values: dict[int, Any], type_: Any) -> Any:
        whens = {pid: literal(value, type_) for pid, value in values.items()}
        return case(whens, value=states.c.purpose_id)

    window = and_(
        states.c.status == ConsentStatus.GIVEN.value,
        states.c.expires_at > now,
        states.c.expires_at <= max(ends.values()),  # the index range
        states.c.expires_at <= per_purpose(ends, UTCDateTime()),
        states.c.purpose_id.in_(list(ends)),
        states.c.warned_at.is_(None),
    )
    ref = literal("consent:", String) + cast(states.c.basis_event_id, String)
    already = exists().where(
        tasks.c.client_id == states.c.client_id,
        tasks.c.origin == TaskOrigin.CONSENT_EXPIRY.value,
        tasks.c.origin_ref == ref,
    )
    source = (
        select(
            per_purpose({pid: t[0] for pid, t in texts.items()}, String()),
            per_purpose({pid: t[1] for pid, t in texts.items()}, String()),
            states.c.client_id,
            clients.c.owner_id,
            _date_of(states.c.expires_at),
            literal(TaskStatus.OPEN.value, String),
            literal(TaskOrigin.CONSENT_EXPIRY.value, String),
            ref,
            literal(now, UTCDateTime()),
        )
        .select_from(states.join(clients, clients.c.id == states.c.client_id))
        # A restricted client (GDPR Art. 18) gets no renewal reminder; the warning
        # stays due, so lifting the restriction brings it.
        .where(window, ~already, clients.c.restricted_at.is_(None))
    )
    names = [
        "title",
        "details",
        "client_id",
        "assignee_id",
        "due_date",
        "status",
        "origin",
        "origin_ref",
        "created_at",
    ]
    statement = insert(tasks).from_select([tasks.c[n] for n in names], source)
    created = db.session.execute(statement, execution_options=COUNTED).rowcount
    restricted = select(clients.c.id).where(clients.c.restricted_at.is_not(None))
    db.session.execute(
        update(states).where(window, states.c.client_id.not_in(restricted)).values(warned_at=now)
    )
    return max(created or 0, 0)


def sweep_expiry(now: datetime | None = None) -> SweepResult:
    """The periodic consent job: record expiries, then warn about coming ones."""
    now = now_utc(now)
    _serialise_sweep()
    result = SweepResult(expired=expire_due(now), warned=warn_expiring(now))
    if result.expired or result.warned:
        record("consent.sweep", details={"now": now, **result.as_dict()})
    return result


# --- retention -------------------------------------------------------------------------


@dataclass
class RetentionResult:
    review_tasks: int = 0
    anonymised: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"review_tasks": self.review_tasks, "anonymised": self.anonymised}


def _retention_cutoff(purposes: Sequence[ConsentPurpose], now: datetime, column: Any) -> Any:
    """SQL: the end of the retention period of the row's purpose, as an instant a state
    must have ended before."""
    whens = {p.id: literal(add_months(now, -p.retention_months), UTCDateTime()) for p in purposes}
    return case(whens, value=column, else_=null())


def _past_retention(purposes: Sequence[ConsentPurpose], now: datetime) -> ColumnElement[bool]:
    """Clients with at least one state, every one of them ended before its purpose's
    retention period (counted from the end) ran out; not anonymised already."""
    mine = aliased(ConsentState)
    cutoff = _retention_cutoff(purposes, now, mine.purpose_id)
    still_held = exists().where(
        mine.client_id == Client.id,
        or_(
            mine.status == ConsentStatus.GIVEN.value,
            mine.ended_at.is_(None),
            cutoff.is_(None),
            mine.ended_at > cutoff,
        ),
    )
    any_state = exists().where(ConsentState.client_id == Client.id)
    anonymised = exists().where(AnonymisedClient.client_id == Client.id)
    # A restriction (GDPR Art. 18(1)(c): kept for the person's legal claims) holds the
    # data past retention until it is lifted.
    return and_(any_state, ~still_held, ~anonymised, Client.restricted_at.is_(None))


def _wants_review(review_ids: Sequence[int]) -> ColumnElement[bool]:
    mine = aliased(ConsentState)
    return exists().where(mine.client_id == Client.id, mine.purpose_id.in_(review_ids))


def retention_texts() -> tuple[str, str]:
    with force_locale(organisation().default_locale or "en"):
        title = _("Retention over: erase this client or record why the data stays")
        details = _(
            "Every purpose this client's data was kept for has ended, and its retention "
            "period has run out. Erase the client, or record a new legal basis."
        )
    return title, details


def apply_retention(now: datetime | None = None) -> RetentionResult:
    """Clients past retention: a review task (one per time their purposes ended) when
    any of their purposes asks for review; otherwise anonymised, in batches, audited."""
    now = now_utc(now)
    purposes = db.session.scalars(select(ConsentPurpose)).all()
    if not purposes:
        return RetentionResult()
    past = _past_retention(purposes, now)
    review_ids = [p.id for p in purposes if p.retention_action == RetentionAction.REVIEW.value]
    result = RetentionResult()
    if review_ids:
        ended = aliased(ConsentState)
        last_end = (
            select(func.max(ended.ended_at)).where(ended.client_id == Client.id).scalar_subquery()
        )
        reviewed = exists().where(
            Task.client_id == Client.id,
            Task.origin == TaskOrigin.RETENTION.value,
            or_(Task.status == TaskStatus.OPEN.value, Task.created_at >= last_end),
        )
        title, details = retention_texts()
        source = select(
            literal(title, String),
            literal(details, String),
            Client.id,
            Client.owner_id,
            literal(TaskStatus.OPEN.value, String),
            literal(TaskOrigin.RETENTION.value, String),
            literal("retention:", String) + cast(Client.id, String),
            literal(now, UTCDateTime()),
        ).where(past, _wants_review(review_ids), ~reviewed)
        names = [
            "title",
            "details",
            "client_id",
            "assignee_id",
            "status",
            "origin",
            "origin_ref",
            "created_at",
        ]
        tasks = Task.__table__
        inserted = db.session.execute(
            insert(tasks).from_select([tasks.c[n] for n in names], source),
            execution_options=COUNTED,
        )
        result.review_tasks = max(inserted.rowcount or 0, 0)
    to_anonymise = select(Client.id).where(past).order_by(Client.id).limit(ANONYMISE_BATCH)
    if review_ids:
        to_anonymise = to_anonymise.where(~_wants_review(review_ids))
    for client_id in db.session.scalars(to_anonymise).all():
        anonymise_client(client_id, now, reason="retention")
        result.anonymised += 1
    return result


def anonymise_client(client_id: int, now: datetime | None = None, reason: str = "") -> list[str]:
    """Strip what identifies the client: name, company, contact and address fields,
    custom fields marked as personal data, notes and files. The row stays (deals,
    statistics), and so do its consent events: evidence, no longer tied to a person.
    Audited without the values. Returns the storage keys of the removed files, which
    are deleted from disk after the commit."""
    from crm.attachments.models import Attachment
    from crm.attachments.services import remove_stored_files
    from crm.fields.models import CustomField
    from crm.notes.models import Note
    from crm.scheduler.runner import after_commit

    now = now_utc(now)
    client = db.session.get(Client, client_id)
    if client is None:
        return []
    personal = set(db.session.scalars(select(CustomField.key).where(CustomField.personal_data)))
    cleared = []
    for name in ("first_name", "last_name", "company", "email", "phone", "street", "postal_code"):
        if getattr(client, name):
            cleared.append(name)
            setattr(client, name, "")
    if client.city:
        cleared.append("city")
        client.city = ""
    custom = dict(client.custom or {})
    removed = sorted(k for k in custom if k in personal)
    client.custom = {k: v for k, v in custom.items() if k not in personal}
    client.refresh_search_text()
    keys = list(
        db.session.scalars(select(Attachment.storage_key).where(Attachment.client_id == client_id))
    )
    db.session.execute(delete(Attachment).where(Attachment.client_id == client_id))
    notes = db.session.execute(delete(Note).where(Note.client_id == client_id)).rowcount
    db.session.add(AnonymisedClient(client_id=client_id, anonymised_at=now))
    db.session.flush()
    record(
        "client.anonymise",
        target_type="client",
        target_id=client_id,
        client_id=client_id,
        details={
            "reason": reason,
            "cleared": cleared,
            "custom_fields": [f"cf:{k}" for k in removed],
            "notes": notes,
            "files": len(keys),
        },
    )
    if keys:
        after_commit(lambda: remove_stored_files(keys))
    return keys


# --- rebuilding the state --------------------------------------------------------------


def rebuild_states(now: datetime | None = None) -> int:
    """Derive consent_states again from the events (set-based): each client and
    purpose's last event decides. A warning already given (an expiry task naming the
    consent) is remembered. Returns the number of states."""
    now = now_utc(now)
    _serialise_sweep()
    events, states, tasks = ConsentEvent.__table__, ConsentState.__table__, Task.__table__
    newer = aliased(ConsentEvent)
    last = ~exists().where(
        newer.client_id == events.c.client_id,
        newer.purpose_id == events.c.purpose_id,
        newer.id > events.c.id,
    )
    holds = events.c.kind.in_([EventKind.GIVEN.value, EventKind.RENEWED.value])
    warned = (
        select(func.min(tasks.c.created_at))
        .where(
            tasks.c.client_id == events.c.client_id,
            tasks.c.origin == TaskOrigin.CONSENT_EXPIRY.value,
            tasks.c.origin_ref == literal("consent:", String) + cast(events.c.id, String),
        )
        .scalar_subquery()
    )
    source = select(
        events.c.client_id,
        events.c.purpose_id,
        case(
            (events.c.kind == EventKind.RENEWED.value, literal(ConsentStatus.GIVEN.value)),
            else_=events.c.kind,
        ),
        events.c.occurred_at,
        events.c.expires_at,
        events.c.notice_id,
        case((holds, events.c.id), else_=null()),
        case((holds, warned), else_=null()),
        case((holds, null()), else_=events.c.occurred_at),
        literal(now, UTCDateTime()),
    ).where(last)
    names = [
        "client_id",
        "purpose_id",
        "status",
        "since",
        "expires_at",
        "notice_id",
        "basis_event_id",
        "warned_at",
        "ended_at",
        "updated_at",
    ]
    db.session.execute(delete(ConsentState))
    result = db.session.execute(
        insert(states).from_select([states.c[n] for n in names], source),
        execution_options=COUNTED,
    )
    count = max(result.rowcount or 0, 0)
    record("consent.rebuild", details={"states": count})
    return count


# --- renewal requests ------------------------------------------------------------------


class RenewalError(Exception):
    """Why a renewal link cannot be used: invalid, expired, used or void."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt=RENEWAL_SALT)


def renewal_token(renewal: ConsentRenewal) -> str:
    """The signed link token: names the request, its client and purpose, and a nonce."""
    return _serializer().dumps([renewal.id, renewal.client_id, renewal.purpose_id, renewal.nonce])  # type: ignore[no-any-return]


def renewable(row: PurposeRow) -> bool:
    """Whether the card offers a renewal request for this purpose."""
    state = row.state
    return bool(
        row.purpose.is_consent
        and not row.purpose.is_archived
        and state is not None
        and state.status in (ConsentStatus.GIVEN.value, ConsentStatus.EXPIRED.value)
    )


def create_renewal(
    client: Client,
    purpose: ConsentPurpose,
    language: str | None,
    by: User | None,
    now: datetime | None = None,
) -> tuple[ConsentRenewal, str]:
    """A renewal request for the client's consent to `purpose`, with the newest notice
    in `language` (or the organisation's language, or any). Returns it and its token;
    the caller sends the email after the commit (see views)."""
    now = now_utc(now)
    if not client.email:
        raise ConsentError(_("The client has no email address."))
    if client.restricted_at is not None:
        raise ConsentError(_("Processing of this client's data is restricted."))
    if purpose.is_archived or not purpose.is_consent:
        raise ConsentError(_("Only consent can be renewed."))
    state = db.session.scalar(
        select(ConsentState).where(
            ConsentState.client_id == client.id, ConsentState.purpose_id == purpose.id
        )
    )
    if state is None or state.status not in (
        ConsentStatus.GIVEN.value,
        ConsentStatus.EXPIRED.value,
    ):
        raise ConsentError(_("There is no consent to renew for this purpose."))
    notices = latest_notices(purpose.id)
    notice = (
        notices.get(language or "")
        or notices.get(organisation().default_locale)
        or next(iter(notices.values()), None)
    )
    if notice is None:
        raise ConsentError(_("This purpose has no notice text."))
    renewal = ConsentRenewal(
        client_id=client.id,
        purpose_id=purpose.id,
        notice_id=notice.id,
        nonce=secrets.token_hex(16),
        sent_to=client.email,
        sent_by_id=by.id if by else None,
        created_at=now,
        expires_at=now + timedelta(days=RENEWAL_DAYS),
    )
    db.session.add(renewal)
    db.session.flush()
    record(
        "consent.renewal_sent",
        target_type="consent_renewal",
        target_id=renewal.id,
        client_id=client.id,
        details={"purpose": purpose.key, "notice": _notice_details([notice])[0]},
        actor=by,
    )
    return renewal, renewal_token(renewal)


def renewal_email(renewal: ConsentRenewal, client: Client, link: str) -> tuple[str, str]:
    """(subject, text) of the renewal request: the purpose, the notice's language, the
    link; no advertising (the email asks one question and offers nothing)."""
    org = organisation()
    purpose = renewal.purpose
    state = db.session.scalar(
        select(ConsentState).where(
            ConsentState.client_id == client.id, ConsentState.purpose_id == purpose.id
        )
    )
    with force_locale(renewal.notice.language):
        subject = _("Please confirm your consent: %(purpose)s", purpose=purpose.name)
        lines = [
            _("Hello %(name)s,", name=f"{client.first_name} {client.last_name}".strip())
            if client.first_name or client.last_name
            else _("Hello,"),
            "",
            _(
                "%(org)s asks whether you want to keep your consent for:",
                org=org.legal_name or org.name,
            ),
            "",
            f"    {purpose.name}",
            "",
        ]
        if state is not None and state.expires_at is not None:
            when = format_date(state.expires_at, "long")
            if state.expires_at > renewal.created_at:
                lines.append(_("Your consent is valid until %(date)s.", date=when))
            else:
                lines.append(_("Your consent ran out on %(date)s.", date=when))
        lines += [
            _("The page below shows what the consent covers. Confirm it, or say no:"),
            "",
            f"    {link}",
            "",
            _(
                "The link works once, until %(date)s. If you do nothing, we stop using "
                "your data for this purpose when the consent runs out.",
                date=format_date(renewal.expires_at, "long"),
            ),
            "",
            org.legal_name or org.name,
        ]
        if org.privacy_contact:
            lines.append(_("Questions about your data: %(email)s", email=org.privacy_contact))
    return subject, "\n".join(lines) + "\n"


def request_renewal(
    client: Client,
    purpose: ConsentPurpose,
    by: User | None,
    language: str | None = None,
    now: datetime | None = None,
) -> ConsentRenewal:
    """Create a renewal request and email it once the transaction commits."""
    from crm.mail import send_email
    from crm.web.urls import external_url

    renewal, token = create_renewal(client, purpose, language, by, now)
    subject, body = renewal_email(renewal, client, external_url("consents.renew", token=token))
    enqueue_after_commit(send_email, renewal.sent_to, subject, body)
    return renewal


def redeemable_renewal(token: str, now: datetime | None = None) -> ConsentRenewal:
    """The renewal request behind a link, if it can still be answered; else RenewalError
    ("invalid": tampered or unknown; "expired"; "used"; "void": the consent was
    withdrawn or the purpose archived since)."""
    now = now_utc(now)
    if not token or len(token) > 300:
        raise RenewalError("invalid")
    try:
        # The database row decides expiry (with the injectable clock); the signature's
        # own age limit only backs it up.
        payload = _serializer().loads(token, max_age=(RENEWAL_DAYS + 1) * 86400)
        renewal_id, client_id, purpose_id, nonce = payload
    except (BadData, TypeError, ValueError):
        raise RenewalError("invalid") from None
    renewal = db.session.get(ConsentRenewal, renewal_id) if isinstance(renewal_id, int) else None
    if (
        renewal is None
        or renewal.client_id != client_id
        or renewal.purpose_id != purpose_id
        or not secrets.compare_digest(renewal.nonce, str(nonce))
    ):
        raise RenewalError("invalid")
    if renewal.used_at is not None:
        raise RenewalError("used")
    if renewal.expires_at <= now:
        raise RenewalError("expired")
    state = db.session.scalar(
        select(ConsentState).where(
            ConsentState.client_id == renewal.client_id,
            ConsentState.purpose_id == renewal.purpose_id,
        )
    )
    # Withdrawn, refused or invalidated since the email went out: the client's last
    # word stands, and the link no longer renews anything.
    if (
        renewal.purpose.is_archived
        or state is None
        or state.status not in (ConsentStatus.GIVEN.value, ConsentStatus.EXPIRED.value)
    ):
        raise RenewalError("void")
    return renewal


def answer_renewal(
    renewal: ConsentRenewal, agree: bool, evidence: Evidence, now: datetime | None = None
) -> ConsentEvent:
    """The client's answer: "renewed" (under the notice the link showed), or, when they
    decline, "withdrawn" if the consent still counts and "refused" if it lapsed. The
    link is used up either way."""
    now = now_utc(now)
    claimed = db.session.execute(
        update(ConsentRenewal)
        .where(ConsentRenewal.id == renewal.id, ConsentRenewal.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:  # a second click raced the first
        raise RenewalError("used")
    purpose = renewal.purpose
    if agree:
        kind = EventKind.RENEWED
    else:
        state = db.session.scalar(
            select(ConsentState).where(
                ConsentState.client_id == renewal.client_id,
                ConsentState.purpose_id == purpose.id,
            )
        )
        counts = state is not None and is_valid(state.status, state.expires_at, now)
        kind = EventKind.WITHDRAWN if counts else EventKind.REFUSED
    event = record_event(
        renewal.client_id,
        purpose,
        kind,
        Method.EMAIL,
        notice=renewal.notice,
        evidence=evidence,
        note=f"renewal request #{renewal.id}",
        now=now,
    )
    renewal.used_at = now
    renewal.event_id = event.id
    db.session.flush()
    return event
