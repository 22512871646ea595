from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow


class FieldType(enum.StrEnum):
    TEXT = "text"
    LONG_TEXT = "long_text"
    NUMBER = "number"
    DATE = "date"
    CHECKBOX = "checkbox"
    SINGLE_CHOICE = "single_choice"
    MULTI_CHOICE = "multi_choice"
    EMAIL = "email"
    PHONE = "phone"
    URL = "url"


# Types whose values are one scalar that sorts and compares: these get an index.
INDEXED_TYPES = frozenset(
    {
        FieldType.TEXT,
        FieldType.NUMBER,
        FieldType.DATE,
        FieldType.CHECKBOX,
        FieldType.SINGLE_CHOICE,
        FieldType.EMAIL,
        FieldType.PHONE,
        FieldType.URL,
    }
)


class CustomField(db.Model):
    __tablename__ = "custom_fields"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stable identifier inside Client.custom and in index names; never changes.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    field_type: Mapped[str] = mapped_column(String(20))
    choices: Mapped[list[str]] = mapped_column(JSON, default=list)
    help_text: Mapped[str | None] = mapped_column(Text)
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    personal_data: Mapped[bool] = mapped_column(Boolean, default=True)
    show_in_list: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def type(self) -> FieldType:
        return FieldType(self.field_type)

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def indexed(self) -> bool:
        return self.type in INDEXED_TYPES

    @property
    def index_name(self) -> str:
        return f"ix_cf_{self.key}"

    def __repr__(self) -> str:
        return f"<CustomField {self.key} {self.field_type}>"
