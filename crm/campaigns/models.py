"""Campaigns, their deliveries (one row per recipient) and the messages kept for the
client card and the data export.

The delivery rows are the record of a campaign's progress: workers claim them in
batches, mark each one sent in the same transaction that records the SMTP answer, and
a reconcile job gives back rows claimed by a worker that died. A broker message only
says "there is work on campaign N".
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User
    from crm.search.models import SavedFilter


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class BodyFormat(enum.StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class Campaign(db.Model):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status_scheduled", "status", "scheduled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    subject: Mapped[str] = mapped_column(String(255))
    sender_name: Mapped[str] = mapped_column(String(120), default="")
    sender_email: Mapped[str] = mapped_column(String(254))
    body: Mapped[str] = mapped_column(Text, default="")
    body_format: Mapped[str] = mapped_column(String(10), default=BodyFormat.MARKDOWN.value)
    # Audience: the lists (ids of mailing_lists) and/or a saved filter. Validated when
    # sending starts, which is when the audience is resolved into deliveries.
    list_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    saved_filter_id: Mapped[int | None] = mapped_column(
        ForeignKey("saved_filters.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(12), default=CampaignStatus.DRAFT.value)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last batch any worker finished: the reconcile job re-enqueues a campaign
    # that has pending deliveries and no progress for a while.
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Users are deactivated, never deleted: plain foreign keys.
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Whose client scope limits a saved filter's audience (the one who pressed Send,
    # or scheduled it).
    sent_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    sent_by: Mapped[User | None] = relationship(foreign_keys=[sent_by_id])
    saved_filter: Mapped[SavedFilter | None] = relationship()

    @property
    def is_editable(self) -> bool:
        return self.status in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)

    def __repr__(self) -> str:
        return f"<Campaign {self.id} {self.status}>"


class Delivery(db.Model):
    """One recipient of one campaign."""

    __tablename__ = "campaign_deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "client_id", name="uq_campaign_deliveries_client"),
        # Claiming: a campaign's pending rows that are due, in id order.
        Index("ix_campaign_deliveries_claim", "campaign_id", "status", "next_attempt_at", "id"),
        # Reclaiming rows of dead workers.
        Index("ix_campaign_deliveries_claimed", "status", "claimed_at"),
        Index("ix_campaign_deliveries_client", "client_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    # The list whose subscription lets us mail this client (its unsubscribe link and
    # its send-time check); None for an audience given by a saved filter alone.
    list_id: Mapped[int | None] = mapped_column(ForeignKey("mailing_lists.id"))
    # The address when sending started: what the card shows as sent to.
    email: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(10), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_answer: Mapped[str] = mapped_column(String(500), default="")
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skip_reason: Mapped[str] = mapped_column(String(40), default="")

    campaign: Mapped[Campaign] = relationship()


class SentMessage(db.Model):
    """A message as it was sent to a client: the exact RFC 5322 bytes (zlib-compressed)
    for the data export's .eml files, plus what the card lists."""

    __tablename__ = "sent_messages"
    __table_args__ = (Index("ix_sent_messages_client_sent", "client_id", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(254))
    message_id: Mapped[str] = mapped_column(String(255))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    raw: Mapped[bytes] = mapped_column(LargeBinary)

    def eml(self) -> bytes:
        import zlib

        return zlib.decompress(self.raw)


class MailRateLimit(db.Model):
    """The shared sending schedule behind CRM_MAIL_RATE when the broker is not Redis:
    `next_at` (Unix time) is when the next reserved stretch may begin."""

    __tablename__ = "mail_rate_limits"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float, default=0.0)
