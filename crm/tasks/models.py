from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User
    from crm.clients.models import Client


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class TaskOrigin(enum.StrEnum):
    MANUAL = "manual"
    CONSENT_EXPIRY = "consent_expiry"
    RETENTION = "retention"
    DATA_REQUEST = "data_request"


class Task(db.Model):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_assignee_open", "assignee_id", "status", "due_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    details: Mapped[str | None] = mapped_column(Text)
    client_id: Mapped[int | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    due_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(8), default=TaskStatus.OPEN.value)
    origin: Mapped[str] = mapped_column(String(20), default=TaskOrigin.MANUAL.value)
    # What created it (e.g. a consent id), so automatic jobs never open it twice.
    origin_ref: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    client: Mapped[Client | None] = relationship()
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])

    @property
    def is_open(self) -> bool:
        return self.status == TaskStatus.OPEN.value
