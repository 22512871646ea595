"""Saved filters: a named search (its filter tree, columns and sort), private to its
owner or shared with everyone."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import JSONType, UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User


class SavedFilter(db.Model):
    __tablename__ = "saved_filters"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_saved_filters_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # The filter tree in its dict form (crm.search.tree.to_dict), fields by reference
    # (cf:<key>), so renaming a label keeps the filter working. None: every client.
    tree: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The text as it read when saved, for display only: the query applied is always
    # printed afresh from `tree` (labels may have changed since).
    query_text: Mapped[str] = mapped_column(Text, default="")
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    sort: Mapped[str] = mapped_column(String(80), default="name")
    sort_desc: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"<SavedFilter {self.id} {self.name!r}>"
