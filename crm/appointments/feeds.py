"""Staff calendar feeds: a secret, revocable URL per staff member that phones poll.

Only the SHA-256 of the secret is stored, so a database copy does not give anyone a
working URL. The secret has 256 random bits, so one fast hash is enough (no salt or
slow KDF is needed, unlike passwords), and looking a feed up by the hash of what was
presented means the index lookup's timing says nothing about the secret itself.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import joinedload, load_only

from crm.appointments.models import (
    Appointment,
    AppointmentStatus,
    CalendarFeed,
    Service,
)
from crm.audit.services import record as audit
from crm.auth.models import User
from crm.clients.models import Client
from crm.extensions import db
from crm.sqltypes import utcnow

# What a token from `secrets.token_urlsafe(32)` looks like (43 characters); anything
# else is refused before it reaches the database.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")
# Phones poll every few minutes; writing last_used_at that often is pointless churn.
USED_RESOLUTION = timedelta(hours=1)
FEED_PAST = timedelta(days=30)
FEED_AHEAD = timedelta(days=365)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def live_feed(user_id: int) -> CalendarFeed | None:
    """The user's current (not revoked) feed, if any."""
    return db.session.scalar(
        select(CalendarFeed)
        .where(CalendarFeed.user_id == user_id, CalendarFeed.revoked_at.is_(None))
        .order_by(CalendarFeed.created_at.desc(), CalendarFeed.id.desc())
        .limit(1)
    )


def create_feed(user: User, *, by: User | None) -> str:
    """A new feed for `user`; returns the secret token, which is not stored and so can
    be shown only now. The user's previous live feed (if any) stops working."""
    now = utcnow()
    for old in db.session.scalars(
        select(CalendarFeed).where(
            CalendarFeed.user_id == user.id, CalendarFeed.revoked_at.is_(None)
        )
    ):
        old.revoked_at = now
    token = secrets.token_urlsafe(32)
    feed = CalendarFeed(
        user_id=user.id,
        token_hash=token_hash(token),
        created_at=now,
        created_by_id=by.id if by else None,
    )
    db.session.add(feed)
    db.session.flush()
    audit(
        "calendar_feed.create",
        target_type="user",
        target_id=user.id,
        details={"feed_id": feed.id},
        actor=by,
    )
    return token


def revoke_feed(feed: CalendarFeed, *, by: User | None) -> None:
    """The feed's URL answers 404 from now on (a second revoke changes nothing)."""
    if feed.revoked_at is not None:
        return
    feed.revoked_at = utcnow()
    db.session.flush()
    audit(
        "calendar_feed.revoke",
        target_type="user",
        target_id=feed.user_id,
        details={"feed_id": feed.id},
        actor=by,
    )


def feed_for_token(token: str) -> CalendarFeed | None:
    """The live feed behind a presented token, with its user; None for anything else
    (malformed, unknown, revoked, or the user deactivated)."""
    if not _TOKEN.fullmatch(token or ""):
        return None
    feed = db.session.scalar(
        select(CalendarFeed)
        .options(joinedload(CalendarFeed.user))
        .where(CalendarFeed.token_hash == token_hash(token), CalendarFeed.revoked_at.is_(None))
    )
    if feed is None or not feed.user.active:
        return None
    return feed


def feed_url(token: str) -> str:
    """The absolute subscription URL, on CRM_BASE_URL (also outside a request)."""
    from crm.mailing.services import public_url

    return public_url("appointments.calendar_feed", token=token)


def mark_used(feed: CalendarFeed, now: datetime | None = None) -> bool:
    """Note that the feed was fetched, at most once per USED_RESOLUTION. A conditional
    UPDATE, so overlapping polls neither write twice nor wait on each other's row.
    Returns whether a row was written (the caller commits)."""
    now = now or utcnow()
    last = feed.last_used_at
    if last is not None and _aware(last) > now - USED_RESOLUTION:
        return False  # the common case: no write at all
    result = db.session.execute(
        update(CalendarFeed)
        .where(
            CalendarFeed.id == feed.id,
            or_(
                CalendarFeed.last_used_at.is_(None),
                CalendarFeed.last_used_at <= now - USED_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def feed_appointments(user_id: int, now: datetime | None = None) -> list[Appointment]:
    """The staff member's appointments from FEED_PAST ago to FEED_AHEAD ahead.

    Cancelled ones are left out rather than sent as STATUS:CANCELLED: a subscribed
    calendar is replaced as a whole on every refresh, so a dropped event disappears
    from the phone anyway, while several calendar apps show a STATUS:CANCELLED event
    in a subscription as if it were still on."""
    now = now or utcnow()
    return list(
        db.session.scalars(
            select(Appointment)
            .options(
                joinedload(Appointment.service).load_only(
                    Service.id, Service.name, Service.location, Service.online_url
                ),
                # Only what a feed may show: the first name (and the restriction flag).
                joinedload(Appointment.client).load_only(
                    Client.id, Client.first_name, Client.restricted_at, Client.owner_id
                ),
                load_only(
                    Appointment.id,
                    Appointment.service_id,
                    Appointment.client_id,
                    Appointment.staff_id,
                    Appointment.starts_at,
                    Appointment.ends_at,
                    Appointment.status,
                    Appointment.created_at,
                    Appointment.updated_at,
                ),
            )
            .where(
                Appointment.staff_id == user_id,
                Appointment.starts_at >= now - FEED_PAST,
                Appointment.starts_at < now + FEED_AHEAD,
                Appointment.status != AppointmentStatus.CANCELLED.value,
            )
            .order_by(Appointment.starts_at, Appointment.id)
        )
    )
