from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import JSONType, UTCDateTime, utcnow
from crm.text import fold

if TYPE_CHECKING:
    from crm.auth.models import User

client_tags = Table(
    "client_tags",
    db.metadata,
    Column("client_id", ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Tag(db.Model):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Client(db.Model):
    __tablename__ = "clients"
    __table_args__ = (
        Index("ix_clients_name_order", "last_name", "first_name", "id"),
        Index("ix_clients_created_order", "created_at", "id"),
        Index("ix_clients_updated_order", "updated_at", "id"),
        Index("ix_clients_email_order", "email", "id"),
        # Matching a typed address case-insensitively (online booking, web forms).
        Index("ix_clients_email_lower", text("lower(email)")),
        Index("ix_clients_city_order", "city", "id"),
        Index("ix_clients_company_order", "company", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    # Empty text is '' rather than NULL, so sorting and keyset paging need no NULL rules.
    company: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(32), default="", index=True)
    street: Mapped[str] = mapped_column(String(200), default="")
    postal_code: Mapped[str] = mapped_column(String(20), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # Custom field values keyed by CustomField.key; see crm/fields for why JSON.
    custom: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Case- and accent-folded name, email and phone for quick search.
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Restriction of processing (Art. 18): kept, but not used or edited until lifted.
    restricted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restriction_reason: Mapped[str] = mapped_column(String(300), default="")
    # The client asked for no SMS (appointment reminders): none are scheduled or sent.
    sms_opt_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User | None] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary=client_tags, order_by=Tag.name)

    @property
    def display_name(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.company or self.email or f"#{self.id}"

    def refresh_search_text(self) -> None:
        digits = "".join(ch for ch in (self.phone or "") if ch.isdigit())
        parts = [self.first_name, self.last_name, self.company, self.email, self.phone, digits]
        self.search_text = fold(" ".join(p for p in parts if p))

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.display_name}>"
