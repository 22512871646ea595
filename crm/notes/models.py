from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User


class NoteKind(enum.StrEnum):
    NOTE = "note"
    CALL = "call"
    MEETING = "meeting"
    EMAIL = "email"


class Note(db.Model):
    """One entry of a client's timeline: a note, or a call, meeting or email logged."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_client_timeline", "client_id", "occurred_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default=NoteKind.NOTE.value)
    body: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    author: Mapped[User | None] = relationship()
