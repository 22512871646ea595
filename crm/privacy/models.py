"""The request register, export jobs and the record of each erasure.

A request and an erasure record outlive the client they concern: `client_id` goes
NULL when the client is erased and `subject_ref` keeps the former id, which is not
personal data on its own. Nothing here keeps the client's name or contacts once they
are erased (the erasure replaces `requester` with a placeholder).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import JSONType, UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User
    from crm.clients.models import Client


class RequestKind(enum.StrEnum):
    """What the data subject asked for (GDPR Art. 15, 20, 16, 17, 18, 21)."""

    ACCESS = "access"
    PORTABILITY = "portability"
    RECTIFICATION = "rectification"
    ERASURE = "erasure"
    RESTRICTION = "restriction"
    OBJECTION = "objection"


class RequestChannel(enum.StrEnum):
    """How the request reached the business."""

    EMAIL = "email"
    LETTER = "letter"
    PHONE = "phone"
    IN_PERSON = "in_person"
    WEB_FORM = "web_form"
    OTHER = "other"


class RequestStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"  # answered; the outcome says how
    REFUSED = "refused"  # refused with reasons (e.g. identity not confirmed, Art. 12(5))


class DataRequest(db.Model):
    __tablename__ = "privacy_requests"
    __table_args__ = (Index("ix_privacy_requests_status_due", "status", "due_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(12), default=RequestStatus.OPEN.value)
    client_id: Mapped[int | None] = mapped_column(
        ForeignKey("clients.id", ondelete="SET NULL"), index=True
    )
    # The client's id, kept after erasure (client_id goes NULL) so the register still
    # says which record a request was about.
    subject_ref: Mapped[int | None] = mapped_column(Integer)
    # Who asked, as they named themselves; replaced by a placeholder on erasure.
    requester: Mapped[str] = mapped_column(String(200), default="")
    channel: Mapped[str] = mapped_column(String(16))
    received_on: Mapped[date] = mapped_column(Date)
    # What was asked, in the staff's words (e.g. which values to correct).
    details: Mapped[str] = mapped_column(Text, default="")
    # How the requester's identity was checked (Art. 12(6)).
    identity_check: Mapped[str] = mapped_column(Text, default="")
    # One calendar month after receipt (Art. 12(3)); extended_until, when set, replaces
    # it and is at most two months later.
    due_on: Mapped[date] = mapped_column(Date)
    extended_until: Mapped[date | None] = mapped_column(Date)
    extension_reason: Mapped[str] = mapped_column(Text, default="")
    extended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(Text, default="")
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    client: Mapped[Client | None] = relationship()
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    @property
    def is_open(self) -> bool:
        return self.status == RequestStatus.OPEN.value

    @property
    def deadline(self) -> date:
        """The date the answer is due, after any extension."""
        return self.extended_until or self.due_on


class ExportStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"  # the file was removed after its download window


class DataExport(db.Model):
    """One export of one client's data: a job row the worker advances (the database
    is the source of truth; the broker message is a nudge) and, once done, a zip file
    under the instance folder that only `requested_by` may download until
    `expires_at`."""

    __tablename__ = "privacy_exports"
    __table_args__ = (Index("ix_privacy_exports_status", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("privacy_requests.id", ondelete="SET NULL"), index=True
    )
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(12), default=ExportStatus.PENDING.value)
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    step: Mapped[str] = mapped_column(String(64), default="")  # what the worker is doing
    # Relative to the exports folder of the instance.
    file_name: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Written with every progress step: a running export whose heartbeat stops was
    # left by a worker that died, and the reconcile job hands it to another.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    client: Mapped[Client] = relationship()
    request: Mapped[DataRequest | None] = relationship()
    requested_by: Mapped[User | None] = relationship()

    @property
    def is_working(self) -> bool:
        """Still being built: the page keeps polling."""
        return self.status in (ExportStatus.PENDING.value, ExportStatus.RUNNING.value)

    def is_downloadable(self, now: datetime) -> bool:
        return (
            self.status == ExportStatus.DONE.value
            and self.expires_at is not None
            and self.expires_at > now
        )


class Erasure(db.Model):
    """That a client was erased, by whom and under which request, and how much went:
    no name, no contacts, only the former id and counts."""

    __tablename__ = "privacy_erasures"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_ref: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("privacy_requests.id", ondelete="SET NULL")
    )
    erased_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Rows removed per kind, e.g. {"notes": 12, "attachments": 2}.
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    redacted_audit_entries: Mapped[int] = mapped_column(Integer, default=0)

    erased_by: Mapped[User | None] = relationship()
