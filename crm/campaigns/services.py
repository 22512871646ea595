"""Campaigns: editing, resolving the audience, sending in claimed batches, pausing,
cancelling, the reconcile job's work, and the figures the pages show.

How a campaign is sent (see docs/DESIGN.md, "Campaigns and sending"):

1. `start_sending` moves the campaign to `sending` with one conditional UPDATE (so
   two clicks cannot start it twice) and resolves the audience into one delivery row
   per recipient with one `INSERT ... SELECT`; the actor messages leave after commit.
2. A worker (`work_on_campaign`) claims a batch of due pending rows (`FOR UPDATE SKIP
   LOCKED` on PostgreSQL, a conditional UPDATE on SQLite, whose writers are serialised
   anyway), asks the mailing rules again for exactly those recipients
   (`blocked_client_ids`: unsubscribed, suppressed, restricted, no consent since) and
   skips them, sends the rest over one SMTP connection under the global rate limit,
   and records every answer in one transaction per batch: sent rows, retries with
   backoff, failures, suppression of hard bounces, and the stored messages.
3. A worker that dies mid-batch leaves its rows claimed; `reconcile` gives back claims
   older than the claim timeout and re-enqueues campaigns without recent progress. At
   most that one batch is sent twice; no recipient is lost.

Services flush (or commit where a batch must be durable before the next step); the
caller commits otherwise, as everywhere in the project.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, and_, func, select, update

from crm.audit.services import record as audit
from crm.auth.models import User
from crm.campaigns.content import (
    ContentError,
    Footer,
    PreparedContent,
    Rendered,
    check_template,
)
from crm.campaigns.links import UnsubscribeLinks
from crm.campaigns.models import (
    BodyFormat,
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    SentMessage,
)
from crm.campaigns.transport import (
    Outcome,
    RateLimiter,
    SendResult,
    Transport,
    make_rate_limiter,
    open_transport,
)
from crm.clients.models import Client
from crm.extensions import db
from crm.mailing.models import MailingList, Subscription, SubscriptionStatus
from crm.mailing.services import (
    audience_client_ids,
    blocked_client_ids,
    normalise_email,
    suppress,
    suppressed_emails,
    unsubscribes_for_campaign,
)
from crm.search.errors import QueryError
from crm.search.models import SavedFilter
from crm.search.services import client_condition
from crm.search.tree import from_dict
from crm.sqltypes import utcnow

PENDING = DeliveryStatus.PENDING.value
SENDING = DeliveryStatus.SENDING.value
SENT = DeliveryStatus.SENT.value
FAILED = DeliveryStatus.FAILED.value
SKIPPED = DeliveryStatus.SKIPPED.value

# Recipients claimed at once (CRM_CAMPAIGN_BATCH_SIZE, whose default is in crm.config):
# claim, send-time check and recording are per batch, so larger batches cost less per
# message (500: about a third less than 100); a worker killed mid-batch sends at most
# one batch twice.
BATCH_SIZE = 100
# How often a worker in the middle of a batch looks whether the campaign was paused or
# cancelled (seconds; 0: before every message).
STOP_CHECK_SECONDS = 0.2
# How long one actor message works before handing over to a fresh message, so that a
# long, rate-limited campaign never meets the broker's time limit.
RUN_SECONDS = 60.0
# How many actor messages work on one campaign at once (each claims its own batches).
PARALLEL_MESSAGES = 4
# A sending campaign without a finished batch for this long is re-enqueued.
STALL_SECONDS = 120


class CampaignError(Exception):
    """A change that cannot be made now; the message is for the user."""


def _config(name: str, default: Any) -> Any:
    return current_app.config.get(name, default)


# --- editing -------------------------------------------------------------------------------


@dataclass
class CampaignSpec:
    subject: str
    sender_email: str
    body: str
    name: str = ""
    sender_name: str = ""
    body_format: str = BodyFormat.MARKDOWN.value
    list_ids: list[int] = field(default_factory=list)
    saved_filter_id: int | None = None


def check_spec(spec: CampaignSpec, user: User | None = None) -> dict[str, str]:
    """Problems per field ({} when none): the template, the audience."""
    problems: dict[str, str] = {}
    if spec.body_format not in {f.value for f in BodyFormat}:
        problems["body_format"] = _("Choose Markdown or HTML.")
    else:
        error = check_template(spec.subject, spec.body, spec.body_format)
        if error:
            where = "subject" if error.startswith("Subject") else "body"
            problems[where] = _("This template cannot be used: %(error)s", error=error)
    if not spec.list_ids:
        # Every message needs a list whose one-click unsubscribe it carries; a saved
        # filter narrows the lists' subscribers, it does not replace them.
        problems["list_ids"] = _("Choose at least one list.")
    else:
        known = set(
            db.session.scalars(
                select(MailingList.id).where(
                    MailingList.id.in_(spec.list_ids), MailingList.archived_at.is_(None)
                )
            )
        )
        if known != set(spec.list_ids):
            problems["list_ids"] = _("One of the chosen lists does not exist or is archived.")
    if spec.saved_filter_id is not None:
        saved = db.session.get(SavedFilter, spec.saved_filter_id)
        if saved is None or (user is not None and not saved.shared and saved.owner_id != user.id):
            problems["saved_filter_id"] = _("This saved filter does not exist.")
    return problems


def _apply(campaign: Campaign, spec: CampaignSpec) -> None:
    campaign.name = spec.name.strip()[:200]
    campaign.subject = spec.subject.strip()[:255]
    campaign.sender_name = spec.sender_name.strip()[:120]
    campaign.sender_email = spec.sender_email.strip()[:254]
    campaign.body = spec.body
    campaign.body_format = spec.body_format
    campaign.list_ids = sorted({int(i) for i in spec.list_ids})
    campaign.saved_filter_id = spec.saved_filter_id


def create_campaign(spec: CampaignSpec, by: User | None) -> Campaign:
    campaign = Campaign(status=CampaignStatus.DRAFT.value, created_by_id=by.id if by else None)
    _apply(campaign, spec)
    db.session.add(campaign)
    db.session.flush()
    audit("campaign.create", target_type="campaign", target_id=campaign.id, actor=by)
    return campaign


def update_campaign(campaign: Campaign, spec: CampaignSpec, by: User | None) -> None:
    if not campaign.is_editable:
        raise CampaignError(_("Only a draft or scheduled campaign can be changed."))
    _apply(campaign, spec)
    db.session.flush()
    audit("campaign.update", target_type="campaign", target_id=campaign.id, actor=by)


# --- the audience --------------------------------------------------------------------------


def audience_condition(campaign: Campaign, user: User | None) -> ColumnElement[bool]:
    """The clients the campaign goes to: confirmed subscribers of any of its lists
    with an address, narrowed by its saved filter within `user`'s client scope.
    QueryError when the saved filter no longer compiles (an archived field)."""
    condition: ColumnElement[bool] = and_(
        Client.id.in_(audience_client_ids(campaign.list_ids)), Client.email != ""
    )
    if campaign.saved_filter_id is not None:
        saved = db.session.get(SavedFilter, campaign.saved_filter_id)
        if saved is None:
            raise QueryError(_("The campaign's saved filter was deleted."), 0)
        if user is None:
            raise QueryError(_("A saved filter needs the user whose scope applies."), 0)
        tree = from_dict(saved.tree) if saved.tree else None
        condition = and_(condition, client_condition(user, tree))
    return condition


def count_audience(campaign: Campaign, user: User | None) -> int:
    stmt = select(func.count()).select_from(Client).where(audience_condition(campaign, user))
    return db.session.scalar(stmt) or 0


def _first_list(campaign: Campaign) -> Any:
    """Per client, the lowest of the campaign's lists they are a confirmed subscriber
    of: the list whose unsubscribe link and send-time check their message uses."""
    return (
        select(func.min(Subscription.list_id))
        .where(
            Subscription.client_id == Client.id,
            Subscription.list_id.in_(campaign.list_ids),
            Subscription.status == SubscriptionStatus.CONFIRMED.value,
        )
        .scalar_subquery()
    )


def resolve_audience(campaign: Campaign, user: User | None, now: datetime) -> int:
    """One delivery row per recipient, in one INSERT ... SELECT (no row passes through
    Python, whatever the audience's size). Returns how many rows were written."""
    columns = [
        "campaign_id",
        "client_id",
        "list_id",
        "email",
        "status",
        "attempts",
        "next_attempt_at",
        "last_answer",
        "skip_reason",
    ]
    source = select(
        sa.literal(campaign.id),
        Client.id,
        _first_list(campaign),
        Client.email,
        sa.literal(PENDING),
        sa.literal(0),
        sa.literal(now, Delivery.__table__.c.next_attempt_at.type),
        sa.literal(""),
        sa.literal(""),
    ).where(audience_condition(campaign, user))
    db.session.execute(sa.insert(Delivery).from_select(columns, source))
    return (
        db.session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign.id)
        )
        or 0
    )


# --- state changes -------------------------------------------------------------------------


def _transition(campaign_id: int, from_states: Sequence[str], **values: Any) -> bool:
    """A conditional UPDATE of the status: True when this call made the change (so two
    concurrent clicks, or a click and the scheduler, cannot both act)."""
    result = db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_(list(from_states)))
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def _parallel() -> int:
    return max(1, int(_config("CRM_CAMPAIGN_PARALLEL", PARALLEL_MESSAGES)))


def _enqueue(campaign_id: int, count: int = 1) -> None:
    from crm.campaigns.tasks import send_campaign
    from crm.queue import enqueue_after_commit

    for _i in range(count):
        enqueue_after_commit(send_campaign, campaign_id)


def start_sending(campaign: Campaign, user: User | None, now: datetime | None = None) -> int:
    """Resolve the audience and hand the campaign to the workers (after the caller's
    commit). Returns the number of recipients. CampaignError when it is not a draft or
    scheduled campaign, or its audience cannot be resolved."""
    now = now or utcnow()
    problems = check_spec(_spec_of(campaign))
    if problems:
        raise CampaignError(next(iter(problems.values())))
    sender = user or campaign.sent_by
    if not _transition(
        campaign.id,
        (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED),
        status=CampaignStatus.SENDING.value,
        started_at=now,
        progress_at=now,
        sent_by_id=sender.id if sender else None,
    ):
        raise CampaignError(_("This campaign is already being sent or was sent."))
    try:
        recipients = resolve_audience(campaign, sender, now)
    except QueryError as error:
        raise CampaignError(
            _("The saved filter cannot be used: %(error)s", error=error.message)
        ) from error
    db.session.refresh(campaign)
    audit(
        "campaign.send",
        target_type="campaign",
        target_id=campaign.id,
        details={"recipients": recipients},
        actor=sender,
    )
    if recipients == 0:
        finish_if_done(campaign.id, now)
    else:
        _enqueue(campaign.id, _parallel())
    return recipients


def _spec_of(campaign: Campaign) -> CampaignSpec:
    return CampaignSpec(
        subject=campaign.subject,
        sender_email=campaign.sender_email,
        body=campaign.body,
        name=campaign.name,
        sender_name=campaign.sender_name,
        body_format=campaign.body_format,
        list_ids=list(campaign.list_ids or []),
        saved_filter_id=campaign.saved_filter_id,
    )


def schedule(campaign: Campaign, when: datetime, user: User) -> None:
    if when.tzinfo is None:
        raise ValueError("naive datetime given; use an aware UTC datetime")
    if not _transition(
        campaign.id,
        (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED),
        status=CampaignStatus.SCHEDULED.value,
        scheduled_at=when,
        sent_by_id=user.id,
    ):
        raise CampaignError(_("Only a draft can be scheduled."))
    audit(
        "campaign.schedule",
        target_type="campaign",
        target_id=campaign.id,
        details={"at": when.isoformat()},
        actor=user,
    )
    db.session.refresh(campaign)


def unschedule(campaign: Campaign, user: User) -> None:
    if not _transition(campaign.id, (CampaignStatus.SCHEDULED,), status=CampaignStatus.DRAFT.value):
        raise CampaignError(_("This campaign is not scheduled."))
    audit("campaign.unschedule", target_type="campaign", target_id=campaign.id, actor=user)
    db.session.refresh(campaign)


def pause(campaign: Campaign, user: User | None) -> None:
    """Workers stop after the message they are sending; their unsent rows go back."""
    if not _transition(campaign.id, (CampaignStatus.SENDING,), status=CampaignStatus.PAUSED.value):
        raise CampaignError(_("Only a campaign that is being sent can be paused."))
    audit("campaign.pause", target_type="campaign", target_id=campaign.id, actor=user)
    db.session.refresh(campaign)


def resume(campaign: Campaign, user: User | None, now: datetime | None = None) -> None:
    if not _transition(
        campaign.id,
        (CampaignStatus.PAUSED,),
        status=CampaignStatus.SENDING.value,
        progress_at=now or utcnow(),
    ):
        raise CampaignError(_("Only a paused campaign can be resumed."))
    audit("campaign.resume", target_type="campaign", target_id=campaign.id, actor=user)
    _enqueue(campaign.id, _parallel())
    db.session.refresh(campaign)


def cancel(campaign: Campaign, user: User | None, now: datetime | None = None) -> None:
    """No further message goes out; pending recipients are marked skipped."""
    now = now or utcnow()
    if not _transition(
        campaign.id,
        (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED),
        status=CampaignStatus.CANCELLED.value,
        finished_at=now,
    ):
        raise CampaignError(_("This campaign cannot be cancelled now."))
    db.session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign.id, Delivery.status == PENDING)
        .values(status=SKIPPED, skip_reason="cancelled")
        .execution_options(synchronize_session=False)
    )
    audit("campaign.cancel", target_type="campaign", target_id=campaign.id, actor=user)
    db.session.refresh(campaign)


def delete_draft(campaign: Campaign, user: User | None) -> None:
    if campaign.status != CampaignStatus.DRAFT:
        raise CampaignError(_("Only a draft can be deleted."))
    audit("campaign.delete", target_type="campaign", target_id=campaign.id, actor=user)
    db.session.delete(campaign)
    db.session.flush()


def finish_if_done(campaign_id: int, now: datetime | None = None) -> bool:
    """Mark a sending campaign done once no row is pending or claimed."""
    open_rows = (
        select(Delivery.id)
        .where(Delivery.campaign_id == campaign_id, Delivery.status.in_([PENDING, SENDING]))
        .exists()
    )
    result = db.session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == CampaignStatus.SENDING.value,
            ~open_rows,
        )
        .values(status=CampaignStatus.DONE.value, finished_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


# --- content --------------------------------------------------------------------------------


def footer_for_organisation() -> Footer:
    """The unsubscribe line in the organisation's language (workers have no request)."""
    from crm.org.services import organisation

    with force_locale(organisation().default_locale or "en"):
        return Footer(
            text=_("To stop receiving these emails, unsubscribe here: %(url)s", url="{url}"),
            link=_("Unsubscribe"),
        )


def prepare(campaign: Campaign) -> PreparedContent:
    """The campaign's compiled templates; ContentError when they do not render."""
    base = urlsplit_host(current_app.config.get("CRM_BASE_URL") or "")
    return PreparedContent(
        subject=campaign.subject,
        body=campaign.body,
        body_format=campaign.body_format,
        sender_name=campaign.sender_name,
        sender_email=campaign.sender_email,
        footer=footer_for_organisation(),
        message_domain=base,
    )


def urlsplit_host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "crm.local"


def variables_for(first_name: str, last_name: str, email: str, unsubscribe: str) -> dict[str, str]:
    return {
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        "unsubscribe_url": unsubscribe,
    }


def preview_url() -> str:
    """The unsubscribe link shown in previews and test sends: the public site, not a
    real token (a staff member clicking it must not unsubscribe a client)."""
    return (current_app.config.get("CRM_BASE_URL") or "http://localhost").rstrip("/") + "/"


def sample_recipient(campaign: Campaign, user: User | None) -> Client | None:
    """The first client of the audience (by name), for the preview."""
    if not campaign.list_ids:
        return None
    try:
        condition = audience_condition(campaign, user)
    except QueryError:
        return None
    return db.session.scalar(
        select(Client).where(condition).order_by(Client.last_name, Client.id).limit(1)
    )


def render_preview(campaign: Campaign, user: User | None) -> tuple[Rendered, Client | None]:
    """The campaign as the sample recipient (or a made-up one) would get it."""
    sample = sample_recipient(campaign, user)
    content = prepare(campaign)
    if sample is not None:
        variables = variables_for(sample.first_name, sample.last_name, sample.email, preview_url())
    else:
        variables = variables_for("Zofia", "Wiśniewska", "zofia@example.com", preview_url())
    return content.render(variables), sample


def send_test(campaign: Campaign, to_email: str, user: User) -> SendResult:
    """Send the campaign once to a staff address, now, with made-up variables."""
    content = prepare(campaign)
    first, _sep, last = (user.full_name or "").partition(" ")
    raw, _rendered, _mid = content.message(
        to_email=to_email,
        to_name=user.full_name or "",
        variables=variables_for(first, last, to_email, preview_url()),
    )
    transport = open_transport(current_app.config)
    try:
        result = transport.send(campaign.sender_email, to_email, raw)
    finally:
        transport.close()
    audit(
        "campaign.test_send",
        target_type="campaign",
        target_id=campaign.id,
        details={"to": to_email, "result": result.outcome.value},
        actor=user,
    )
    return result


# --- sending --------------------------------------------------------------------------------


def worker_name() -> str:
    """Who holds a claim: host, process and thread (one batch per thread at a time)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:120]


@dataclass
class Claimed:
    id: int
    client_id: int
    list_id: int | None
    email: str
    attempts: int


def claim_batch(campaign_id: int, worker: str, size: int, now: datetime) -> list[Claimed]:
    """Claim up to `size` due pending rows for `worker` and commit the claim."""
    rows = _claim(campaign_id, worker, size, now)
    db.session.commit()
    return rows


def _claim(campaign_id: int, worker: str, size: int, now: datetime) -> list[Claimed]:
    """Claim up to `size` due pending rows for `worker` in the current transaction (the
    caller commits before sending anything).

    PostgreSQL: the rows are picked `FOR UPDATE SKIP LOCKED`, so concurrent workers
    take different rows without waiting for each other. SQLite has one writer at a time:
    the same UPDATE with its subquery runs as one statement inside the write lock, and
    `status = 'pending'` in it keeps a row from being claimed twice."""
    table = Delivery.__table__
    due = (
        select(table.c.id)
        .where(
            table.c.campaign_id == campaign_id,
            table.c.status == PENDING,
            table.c.next_attempt_at <= now,
        )
        # In the claim index's order: ORDER BY id alone made both databases sort every
        # due pending row of the campaign for each batch (100k rows at the start).
        .order_by(table.c.next_attempt_at, table.c.id)
        .limit(size)
    )
    picked: Any = due.scalar_subquery()
    if db.session.get_bind().dialect.name == "postgresql":
        # As a CTE: PostgreSQL runs it once. Inside `IN (subquery)` the planner may run
        # a LIMIT ... SKIP LOCKED subquery more than once and claim more than `size`.
        locked = due.with_for_update(skip_locked=True).cte("due")
        picked = select(locked.c.id)
    stmt = (
        update(table)
        .where(table.c.id.in_(picked), table.c.status == PENDING)
        .values(status=SENDING, claimed_by=worker, claimed_at=now)
        .returning(table.c.id, table.c.client_id, table.c.list_id, table.c.email, table.c.attempts)
    )
    rows = [Claimed(*row) for row in db.session.execute(stmt).all()]
    rows.sort(key=lambda r: r.id)
    return rows


def _campaign_status(campaign_id: int) -> str | None:
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    # End the read transaction: on SQLite a transaction keeps reading its first
    # snapshot, and would never see the pause.
    db.session.commit()
    return status


@dataclass
class Outcomes:
    """What one batch did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    released: int = 0
    stopped: str | None = None  # the campaign status that stopped the batch
    # Rows claimed for the next batch in the transaction that recorded this one.
    next_batch: list[Claimed] = field(default_factory=list)


@dataclass(slots=True)
class _Result:
    row: Claimed
    result: SendResult
    at: datetime
    raw: bytes = b""
    subject: str = ""
    message_id: str = ""


def _skip_blocked(
    rows: list[Claimed], worker: str
) -> tuple[list[Claimed], int, dict[int, tuple[str, str]]]:
    """Ask the mailing rules again, now, about exactly these recipients; mark the
    refused ones skipped with the reason. Returns the rows that may be mailed, how many
    were skipped, and the recipients' names (read in the same transaction)."""
    by_list: dict[int | None, list[int]] = {}
    for row in rows:
        by_list.setdefault(row.list_id, []).append(row.client_id)
    blocked: dict[int, str] = {}
    for list_id, client_ids in by_list.items():
        blocked.update(blocked_client_ids(client_ids, list_id))
    # The address the row was resolved with may differ from the card's current one
    # (which `blocked_client_ids` checked): it is the one we would mail, so it must not
    # be suppressed either.
    suppressed = suppressed_emails(row.email for row in rows)
    reasons = {
        row.id: blocked.get(row.client_id)
        or ("suppressed" if normalise_email(row.email) in suppressed else "")
        for row in rows
    }
    sendable = [row for row in rows if not reasons[row.id]]
    names = _names([row.client_id for row in sendable]) if sendable else {}
    db.session.commit()  # end the reads before writing (SQLite: see claim_batch)
    skipped = [{"b_id": rid, "b_reason": reason[:40]} for rid, reason in reasons.items() if reason]
    if skipped:
        table = Delivery.__table__
        db.session.execute(
            update(table)
            .where(
                table.c.id == sa.bindparam("b_id"),
                table.c.status == SENDING,
                table.c.claimed_by == worker,
            )
            .values(
                status=SKIPPED,
                skip_reason=sa.bindparam("b_reason"),
                claimed_by=None,
                claimed_at=None,
            ),
            skipped,
        )
        db.session.commit()
    return sendable, len(skipped), names


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


# PostgreSQL: one array parameter instead of one placeholder per value; an IN list of
# 500 placeholders took longer to send and plan than to run.
_NAMES_ANY = "SELECT id, first_name, last_name FROM clients WHERE id = ANY(%(ids)s)"


def _names(client_ids: list[int]) -> dict[int, tuple[str, str]]:
    if _postgres():
        rows: Any = db.session.connection().exec_driver_sql(_NAMES_ANY, {"ids": client_ids})
    else:
        rows = db.session.execute(
            select(Client.id, Client.first_name, Client.last_name).where(Client.id.in_(client_ids))
        )
    return {r[0]: (r[1] or "", r[2] or "") for r in rows}


def run_batch(
    campaign: Campaign,
    content: PreparedContent,
    transport: Transport,
    limiter: RateLimiter | None,
    *,
    worker: str | None = None,
    clock: Callable[[], datetime] = utcnow,
    before_send: Callable[[Claimed], None] | None = None,
    links: UnsubscribeLinks | None = None,
    claimed: list[Claimed] | None = None,
    claim_next: bool = False,
) -> Outcomes:
    """Claim one batch of `campaign` (or take the rows `claimed` for this worker by the
    previous batch) and send it. With `claim_next`, the transaction that records the
    answers also claims the next batch (`Outcomes.next_batch`): one write transaction
    per batch instead of two, which on SQLite is one turn at the write lock.
    `before_send` is a test hook; `links` the campaign's link builder (made here when
    not given)."""
    worker = worker or worker_name()
    campaign_id = campaign.id
    size = int(_config("CRM_CAMPAIGN_BATCH_SIZE", BATCH_SIZE))
    outcomes = Outcomes()
    rows = claimed if claimed is not None else claim_batch(campaign_id, worker, size, clock())
    outcomes.claimed = len(rows)
    if not rows:
        return outcomes
    rows, outcomes.skipped, names = _skip_blocked(rows, worker)
    if links is None or links.campaign_id != campaign_id:
        links = UnsubscribeLinks(campaign_id)
    results: list[_Result] = []
    stop_check = float(_config("CRM_CAMPAIGN_STOP_CHECK_SECONDS", STOP_CHECK_SECONDS))
    checked_at = time.monotonic()
    unsent: list[Claimed] = []
    sender = campaign.sender_email
    send = transport.send
    no_name = ("", "")

    def build(row: Claimed) -> tuple[bytes, str, str] | ContentError:
        first, last = names.get(row.client_id, no_name)
        link = links(row.client_id, row.list_id) if row.list_id else ""
        try:
            return content.build(
                to_email=row.email,
                to_name=f"{first} {last}".strip(),
                variables={
                    "first_name": first,
                    "last_name": last,
                    "email": row.email,
                    "unsubscribe_url": link,
                },
            )
        except ContentError as exc:  # e.g. a value the template cannot take
            return exc

    # One message ahead is built, so that the transport can announce its envelope
    # together with the current message's content (one round trip per message).
    upcoming = build(rows[0]) if rows else None
    for index, row in enumerate(rows):
        if index and time.monotonic() - checked_at >= stop_check:
            status = _campaign_status(campaign_id)
            checked_at = time.monotonic()
            if status != CampaignStatus.SENDING:
                outcomes.stopped = status or "deleted"
                unsent = rows[index:]
                break
        if before_send is not None:
            before_send(row)
        built = upcoming
        upcoming = build(rows[index + 1]) if index + 1 < len(rows) else None
        if isinstance(built, ContentError) or built is None:
            answer = SendResult(Outcome.PERMANENT, str(built)[:500])
            results.append(_Result(row, answer, clock()))
            continue
        then = None
        if upcoming is not None and not isinstance(upcoming, ContentError):
            then = (sender, rows[index + 1].email)
        if limiter is not None:
            limiter.wait()
        raw, subject, message_id = built
        result = send(sender, row.email, raw, then)
        results.append(_Result(row, result, clock(), raw, subject, message_id))
    next_size = size if claim_next and not outcomes.stopped else 0
    _record(campaign_id, worker, results, unsent, outcomes, clock(), claim=next_size)
    return outcomes


def _backoff(attempts: int) -> timedelta:
    base = float(_config("CRM_CAMPAIGN_RETRY_SECONDS", 60))
    return timedelta(seconds=base * (2 ** max(0, attempts - 1)))


def _touch_progress(campaign_id: int, now: datetime) -> None:
    db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(progress_at=now)
        .execution_options(synchronize_session=False)
    )


def _record(
    campaign_id: int,
    worker: str,
    results: list[_Result],
    unsent: list[Claimed],
    outcomes: Outcomes,
    now: datetime,
    *,
    claim: int = 0,
) -> None:
    """Every answer of the batch in one transaction: the rows still claimed by this
    worker (a claim given back by the reconcile job meanwhile is not ours to mark),
    sent/retry/failed, suppression of hard bounces, the stored messages; and with
    `claim`, the claim of the next batch of that size (`outcomes.next_batch`).

    The common case, a sent message, is one row of one set-based UPDATE and one row of
    one INSERT (COPY on PostgreSQL), with the values passed to the driver as they are:
    SQLAlchemy's per-row parameter handling of an executemany cost more than the
    database's work."""
    table = Delivery.__table__
    ids = [r.row.id for r in results] + [r.id for r in unsent]
    if not ids:
        return
    postgres = db.session.get_bind().dialect.name == "postgresql"
    # The driver's parameters of the sent rows are made before the transaction: on
    # SQLite the write lock is held from the first statement to the commit, and every
    # other worker waits for it meanwhile.
    convert = _datetime_param()
    sent_rows: dict[int, tuple[Any, ...]] = {}  # id: (attempts, answer, sent at, id)
    stored: dict[int, tuple[Any, ...]] = {}  # id: (client, subject, email, mid, at, raw)
    for item in results:
        if item.result.outcome is Outcome.SENT:
            row, at = item.row, convert(item.at)
            sent_rows[row.id] = (row.attempts + 1, item.result.answer[:500], at, row.id)
            stored[row.id] = (
                row.client_id,
                item.subject[:255],
                row.email,
                item.message_id[:255],
                at,
                _stored(item.raw),
            )
    if not postgres:
        # SQLite: a write first, so this transaction takes the write lock before it
        # reads (a transaction that read first could not upgrade after another
        # writer's commit). PostgreSQL touches the campaign row last instead: its lock
        # would otherwise make the workers' batches wait for each other.
        _touch_progress(campaign_id, now)
    # The rows this worker still holds. PostgreSQL: the sent ones are found by their
    # UPDATE itself (its WHERE names the holder, RETURNING says which matched), the
    # few others are locked here so that the reconcile job cannot give them back
    # meanwhile; locking every row first cost as much as updating it.
    checked = [i for i in ids if i not in sent_rows] if postgres else ids
    mine = set()
    if checked:
        mine = set(
            db.session.scalars(
                select(table.c.id)
                .where(
                    table.c.id.in_(checked), table.c.status == SENDING, table.c.claimed_by == worker
                )
                .with_for_update()
            )
        )
    if postgres and sent_rows:
        mine |= _mark_sent_postgres(list(sent_rows.values()), convert(now), worker)
    max_attempts = int(_config("CRM_CAMPAIGN_MAX_ATTEMPTS", 5))
    changes: list[dict[str, Any]] = []  # every outcome but sent
    bounced: list[str] = []
    for item in results:
        row, result = item.row, item.result
        if row.id not in mine or result.outcome is Outcome.SENT:
            continue
        change = {
            "b_id": row.id,
            "status": FAILED,
            "attempts": row.attempts + 1,
            "next_attempt_at": now,
            "last_answer": result.answer[:500],
            "sent_at": None,
        }
        if result.outcome is Outcome.TEMPORARY and row.attempts + 1 < max_attempts:
            change["status"] = PENDING
            change["next_attempt_at"] = now + _backoff(row.attempts + 1)
            outcomes.retried += 1
        else:
            outcomes.failed += 1
            if result.bounce:
                bounced.append(row.email)
        changes.append(change)
    sent = [values for rid, values in sent_rows.items() if rid in mine]
    if sent:
        outcomes.sent += len(sent)
        if not postgres:
            _mark_sent_sqlite(sent, convert(now))
        _store_messages(campaign_id, [v for rid, v in stored.items() if rid in mine], postgres)
    if changes:
        db.session.execute(
            update(table)
            .where(table.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("status"),
                attempts=sa.bindparam("attempts"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                last_answer=sa.bindparam("last_answer"),
                sent_at=sa.bindparam("sent_at"),
                claimed_by=None,
                claimed_at=None,
            ),
            changes,
        )
    back = [r.id for r in unsent if r.id in mine]
    if back:
        cancelled = outcomes.stopped in (CampaignStatus.CANCELLED, "deleted")
        db.session.execute(
            update(table)
            .where(table.c.id.in_(back))
            .values(
                status=SKIPPED if cancelled else PENDING,
                skip_reason="cancelled" if cancelled else "",
                claimed_by=None,
                claimed_at=None,
            )
        )
        outcomes.released = len(back)
    for email in bounced:
        suppress(email, "hard_bounce")
    if claim:
        outcomes.next_batch = _claim(campaign_id, worker, claim, now)
    if postgres:
        _touch_progress(campaign_id, now)
    db.session.commit()


def _stored(raw: bytes) -> bytes:
    """The column's format, a zlib stream (which `SentMessage.eml` reads), with the
    message in stored blocks: deflating took ~23 us a message, more than building it,
    to save ~40% of a table nobody reads in bulk (the card lists 10, an export one
    client's)."""
    return zlib.compress(raw, 0)


def _datetime_param() -> Callable[[datetime], Any]:
    """How an aware UTC datetime goes to the driver: what the column type's own bind
    processing makes of it (naive UTC; on SQLite SQLAlchemy's text format), by a
    cheaper path when it gives the same values, which is checked here."""
    column_type = Delivery.__table__.c.sent_at.type
    dialect = db.session.get_bind().dialect
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:  # pragma: no cover (UTCDateTime always processes)
        return lambda value: column_type.process_bind_param(value, dialect)  # type: ignore[attr-defined]
    fast: Callable[[datetime], Any]
    if dialect.name == "sqlite":

        def fast(value: datetime) -> Any:
            naive = value.astimezone(UTC).replace(tzinfo=None)
            return (
                naive.isoformat(" ") if naive.microsecond else f"{naive} .000000"[:-8] + ".000000"
            )

    else:

        def fast(value: datetime) -> Any:
            return value.astimezone(UTC).replace(tzinfo=None)

    samples = (datetime(2026, 1, 2, 3, 4, 5, 60, UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    if all(fast(sample) == processor(sample) for sample in samples):
        return fast
    return processor  # type: ignore[no-any-return]


def _mark_sent_postgres(sent: list[tuple[Any, ...]], now: Any, worker: str) -> set[int]:
    """The sent rows, (attempts, answer, sent at, id) each, in one UPDATE joined to
    arrays (one statement to parse and plan instead of one per row), only where this
    worker still holds the claim. Returns the ids it updated."""
    result = db.session.connection().exec_driver_sql(
        "UPDATE campaign_deliveries AS d SET status = 'sent', attempts = v.attempts,"
        " next_attempt_at = %(now)s, last_answer = v.answer, sent_at = v.sent_at,"
        " claimed_by = NULL, claimed_at = NULL"
        " FROM unnest(%(ids)s::integer[], %(attempts)s::integer[], %(answers)s::text[],"
        " %(sent_at)s::timestamp[]) AS v (id, attempts, answer, sent_at)"
        " WHERE d.id = v.id AND d.status = 'sending' AND d.claimed_by = %(worker)s"
        " RETURNING d.id",
        {
            "now": now,
            "worker": worker,
            "ids": [s[3] for s in sent],
            "attempts": [s[0] for s in sent],
            "answers": [s[1] for s in sent],
            "sent_at": [s[2] for s in sent],
        },
    )
    return {row[0] for row in result}


def _mark_sent_sqlite(sent: list[tuple[Any, ...]], now: Any) -> None:
    """The sent rows (held by this worker: checked under the write lock), in one
    executemany by the driver."""
    db.session.connection().exec_driver_sql(
        "UPDATE campaign_deliveries SET status = 'sent', attempts = ?, next_attempt_at = ?,"
        " last_answer = ?, sent_at = ?, claimed_by = NULL, claimed_at = NULL WHERE id = ?",
        [(attempts, now, answer, at, rid) for attempts, answer, at, rid in sent],
    )


def _store_messages(campaign_id: int, messages: list[tuple[Any, ...]], postgres: bool) -> None:
    """The exact bytes of every sent message, for the card and the data export:
    (client, subject, email, message id, sent at, stored bytes) each, driver values."""
    if postgres:
        # Binary COPY on the session's connection (same transaction): the text format
        # spelled every message out in hex, which cost more than the server's insert.
        raw_connection = db.session.connection().connection.driver_connection
        assert raw_connection is not None
        with (
            raw_connection.cursor() as cursor,
            cursor.copy(
                "COPY sent_messages (client_id, campaign_id, subject, email, message_id,"
                " sent_at, raw) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int4", "int4", "text", "text", "text", "timestamp", "bytea"])
            for client_id, subject, email, message_id, at, raw in messages:
                copy.write_row((client_id, campaign_id, subject, email, message_id, at, raw))
        return
    db.session.connection().exec_driver_sql(
        "INSERT INTO sent_messages (client_id, campaign_id, subject, email, message_id,"
        " sent_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(c, campaign_id, subject, e, mid, at, raw) for c, subject, e, mid, at, raw in messages],
    )


def work_on_campaign(
    campaign_id: int,
    *,
    run_seconds: float | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> str:
    """What the actor does: send batches until the campaign is done, stopped, waiting
    for a retry, or this message has worked `run_seconds` (then a fresh message takes
    over). Idempotent: a message for a campaign that is not sending does nothing.
    Returns what happened (for logs and tests)."""
    from crm.campaigns.tasks import send_campaign

    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != CampaignStatus.SENDING:
        return "not sending"
    try:
        content = prepare(campaign)
    except ContentError:
        # Checked before sending started; a template that stopped rendering (a code
        # change) pauses the campaign instead of failing every recipient.
        pause(campaign, None)
        db.session.commit()
        return "paused: template"
    db.session.expunge(campaign)  # plain values from here on; commits will not reload it
    db.session.commit()
    limiter = make_rate_limiter(current_app.config, db.session)
    links = UnsubscribeLinks(campaign_id)
    db.session.commit()  # the links' set-up read the settings; end that read
    transport = open_transport(current_app.config)
    deadline = time.monotonic() + (RUN_SECONDS if run_seconds is None else run_seconds)
    claimed: list[Claimed] | None = None
    try:
        while True:
            outcomes = run_batch(
                campaign,
                content,
                transport,
                limiter,
                clock=clock,
                links=links,
                claimed=claimed,
                claim_next=time.monotonic() < deadline,
            )
            claimed = outcomes.next_batch or None
            if outcomes.stopped:
                return f"stopped: {outcomes.stopped}"
            if outcomes.claimed == 0:
                break
            # Rows claimed already are sent before handing over: a fresh message could
            # not take them before the claim timeout.
            if claimed is None and time.monotonic() >= deadline:
                send_campaign.send(campaign_id)  # nothing uncommitted: send directly
                return "handed over"
    finally:
        transport.close()
    now = clock()
    if finish_if_done(campaign_id, now):
        db.session.commit()
        return "done"
    # Nothing due now: rows wait for a retry, or other workers hold the rest.
    next_due = db.session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.campaign_id == campaign_id, Delivery.status == PENDING
        )
    )
    db.session.commit()
    if next_due is not None:
        delay = max(0.0, (next_due - now).total_seconds())
        send_campaign.send_with_options(args=(campaign_id,), delay=int(delay * 1000) + 50)
        return "waiting for retries"
    return "others are sending"


def take_write_lock() -> None:
    """SQLite: make a write the first statement of the transaction, so it waits for the
    lock (busy timeout) and then reads the newest data. A transaction that read first
    cannot take the lock once another writer (a worker) committed: SQLite refuses
    with "database is locked" at once. Call it at the start of a transaction."""
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(sa.text("UPDATE mail_rate_limits SET next_at = next_at WHERE 1 = 0"))


def take_write_lock_fresh() -> None:
    """For a request about to change a campaign while workers write: end its reads
    (nothing is pending) and start a transaction that holds the write lock first."""
    db.session.commit()
    take_write_lock()


# --- the reconcile job ------------------------------------------------------------------------


def reconcile(now: datetime | None = None) -> dict[str, int]:
    """Start scheduled campaigns that are due, give back claims of workers that went
    silent, re-enqueue sending campaigns without recent progress. Flushes; the caller
    (the periodic runner, or a test) commits, which sends the messages."""
    now = now or utcnow()
    figures = {"started": 0, "reclaimed": 0, "requeued": 0, "finished": 0}
    take_write_lock()
    due = db.session.scalars(
        select(Campaign)
        .where(
            Campaign.status == CampaignStatus.SCHEDULED.value,
            Campaign.scheduled_at <= now,
        )
        .order_by(Campaign.scheduled_at)
    ).all()
    for campaign in due:
        try:
            with db.session.begin_nested():
                start_sending(campaign, campaign.sent_by, now)
            figures["started"] += 1
        except CampaignError as error:
            # Not sendable any more (a list archived meanwhile): back to draft, so
            # the page shows it and the job does not retry it every minute.
            _transition(campaign.id, (CampaignStatus.SCHEDULED,), status=CampaignStatus.DRAFT)
            audit(
                "campaign.schedule_failed",
                target_type="campaign",
                target_id=campaign.id,
                details={"error": str(error)},
                actor=campaign.sent_by,
            )
    timeout = timedelta(seconds=int(_config("CRM_CAMPAIGN_CLAIM_TIMEOUT", 600)))
    table = Delivery.__table__
    result = db.session.execute(
        update(table)
        .where(table.c.status == SENDING, table.c.claimed_at < now - timeout)
        .values(status=PENDING, claimed_by=None, claimed_at=None)
    )
    figures["reclaimed"] = result.rowcount or 0
    stall = timedelta(seconds=float(_config("CRM_CAMPAIGN_STALL_SECONDS", STALL_SECONDS)))
    stalled = db.session.scalars(
        select(Campaign.id).where(
            Campaign.status == CampaignStatus.SENDING.value,
            sa.or_(Campaign.progress_at.is_(None), Campaign.progress_at < now - stall),
        )
    ).all()
    for campaign_id in stalled:
        if finish_if_done(campaign_id, now):
            figures["finished"] += 1
            continue
        pending = db.session.scalar(
            select(Delivery.id)
            .where(Delivery.campaign_id == campaign_id, Delivery.status == PENDING)
            .limit(1)
        )
        if pending is not None:
            _enqueue(campaign_id, _parallel())
            figures["requeued"] += 1
    db.session.flush()
    return figures


# --- figures ----------------------------------------------------------------------------------


@dataclass
class Stats:
    recipients: int
    pending: int
    sending: int
    sent: int
    failed: int
    skipped: int
    unsubscribes: int

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.recipients) if self.recipients else 100


def campaign_stats(campaign_id: int) -> Stats:
    """Per-status counts in one grouped query over the claim index."""
    counts = dict(
        db.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        ).all()
    )
    return Stats(
        recipients=sum(counts.values()),
        pending=counts.get(PENDING, 0),
        sending=counts.get(SENDING, 0),
        sent=counts.get(SENT, 0),
        failed=counts.get(FAILED, 0),
        skipped=counts.get(SKIPPED, 0),
        unsubscribes=unsubscribes_for_campaign(campaign_id),
    )


@dataclass
class CardMessage:
    id: int
    subject: str
    sent_at: datetime
    campaign_id: int | None
    campaign_name: str


CARD_MESSAGES = 10


def client_messages(client_id: int, limit: int = CARD_MESSAGES) -> list[CardMessage]:
    """The newest messages sent to a client, for the card: ONE query (the card's
    budget), reading the (client_id, sent_at) index backwards; one more row than shown
    tells whether older ones exist."""
    rows = db.session.execute(
        select(
            SentMessage.id,
            SentMessage.subject,
            SentMessage.sent_at,
            SentMessage.campaign_id,
            sa.case((Campaign.name != "", Campaign.name), else_=Campaign.subject).label(
                "campaign_name"
            ),
        )
        .outerjoin(Campaign, Campaign.id == SentMessage.campaign_id)
        .where(SentMessage.client_id == client_id)
        .order_by(SentMessage.sent_at.desc(), SentMessage.id.desc())
        .limit(limit + 1)
    ).all()
    return [CardMessage(r.id, r.subject, r.sent_at, r.campaign_id, r.campaign_name) for r in rows]
