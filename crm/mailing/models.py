"""Mailing lists: list groups, lists, subscriptions with their insert-only history, and
the suppression list of hashed addresses that are never mailed.

A subscription is not the permission to mail: that is the consent ledger's state for
the list's purpose. A subscription says which list a client wants; every change of it
records a consent event too (see services), and sending asks both.

Database triggers (migration 0008) refuse UPDATE and DELETE on
mailing_subscription_events, except the delete that follows the client's own deletion,
as for consent events.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User
    from crm.consents.models import ConsentPurpose


class OptIn(enum.StrEnum):
    SINGLE = "single"
    DOUBLE = "double"


class SubscriptionStatus(enum.StrEnum):
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class EventSource(enum.StrEnum):
    """Where a subscription change came from."""

    STAFF = "staff"  # the client card
    IMPORT = "import"  # CSV import (page or command)
    CONFIRM = "confirm"  # the double opt-in link
    PAGE = "page"  # the public unsubscribe / preferences page
    ONE_CLICK = "one_click"  # RFC 8058 POST from the mail client
    MASS = "mass"  # a mass action on search results
    SYSTEM = "system"


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED_ALL = "unsubscribed_all"
    HARD_BOUNCE = "hard_bounce"
    ERASED = "erased"
    MANUAL = "manual"


class ListGroup(db.Model):
    """Lists that are alternatives to each other (e.g. weekly vs. monthly): the
    unsubscribe page offers the other lists of the same group."""

    __tablename__ = "mailing_list_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


class MailingList(db.Model):
    __tablename__ = "mailing_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    # Shown to the public (confirmation email, unsubscribe page): what the list is for.
    description: Mapped[str] = mapped_column(Text, default="")
    group_id: Mapped[int | None] = mapped_column(ForeignKey("mailing_list_groups.id"), index=True)
    opt_in: Mapped[str] = mapped_column(String(8), default=OptIn.SINGLE.value)
    # The ledger purpose a subscription records its consent under.
    purpose_id: Mapped[int] = mapped_column(ForeignKey("consent_purposes.id"), index=True)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    group: Mapped[ListGroup | None] = relationship()
    purpose: Mapped[ConsentPurpose] = relationship()

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def is_double(self) -> bool:
        return self.opt_in == OptIn.DOUBLE.value


class Subscription(db.Model):
    """A client on a list: the current status; the history is in SubscriptionEvent."""

    __tablename__ = "mailing_subscriptions"
    __table_args__ = (
        UniqueConstraint("client_id", "list_id", name="uq_mailing_subscriptions_client_list"),
        # Audiences and per-status counts read one list's rows by status.
        Index("ix_mailing_subscriptions_list_status", "list_id", "status", "client_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id"))
    status: Mapped[str] = mapped_column(String(12))
    # Names the current double opt-in request: a newer request voids older links.
    confirm_nonce: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    mailing_list: Mapped[MailingList] = relationship()


class SubscriptionEvent(db.Model):
    """One change of a subscription, with its evidence. Insert-only (triggers)."""

    __tablename__ = "mailing_subscription_events"
    __table_args__ = (
        Index("ix_mailing_subscription_events_sub", "subscription_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("mailing_subscriptions.id", ondelete="CASCADE")
    )
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id"))
    old_status: Mapped[str] = mapped_column(String(12), default="")
    status: Mapped[str] = mapped_column(String(12))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str] = mapped_column(String(45), default="")  # truncated (/24, /48)
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    source: Mapped[str] = mapped_column(String(16))
    # No ON DELETE: users are deactivated, never deleted, and an event is never updated.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The campaign whose unsubscribe link was used (foreign key added by migration 0009;
    # no ON DELETE: sent campaigns are never deleted, and an event is never updated).
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True)
    # The ledger event recorded with this change, if any.
    consent_event_id: Mapped[int | None] = mapped_column(Integer)

    actor: Mapped[User | None] = relationship()


class SuppressionKind(enum.StrEnum):
    EMAIL = "email"
    PHONE = "phone"


class SuppressionScheme(enum.StrEnum):
    """How `Suppression.email_hash` was computed."""

    # HMAC-SHA256 under the installation's SuppressionKey (see crm.mailing.services).
    KEYED = "hmac"
    # Plain SHA-256 of the normalised address: entries written before migration 0011
    # whose address was not known any more then; still checked, never written.
    LEGACY = "sha256"


class Suppression(db.Model):
    """An address or phone number that is never contacted, as a keyed hash of its
    normalised form: it outlives the client (erasure) without keeping the address
    itself. `email_hash` holds the digest of either kind (the column kept its name)."""

    __tablename__ = "mailing_suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8), default=SuppressionKind.EMAIL.value)
    scheme: Mapped[str] = mapped_column(String(8), default=SuppressionScheme.KEYED.value)
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SuppressionKey(db.Model):
    """The installation's secret for suppression hashes (one row, made by migration
    0011). Kept apart from CRM_SECRET_KEY, which may rotate: a new key would make
    every stored hash unmatchable. Without the key a stored hash cannot be tested
    against guessed addresses, as a plain SHA-256 could."""

    __tablename__ = "mailing_suppression_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
