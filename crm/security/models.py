from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.auth.models import Role
from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow


class AllowedNetwork(db.Model):
    """One range of the IP allow-list: global when role_id is NULL, else for one role.

    `cidr` is the normalised text of ipaddress.ip_network(strict=False). Deleting a
    role deletes its ranges (they must never turn into global ones).
    """

    __tablename__ = "allowed_networks"

    id: Mapped[int] = mapped_column(primary_key=True)
    cidr: Mapped[str] = mapped_column(String(49))
    role_id: Mapped[int | None] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), index=True
    )
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    role: Mapped[Role | None] = relationship()


class LoginAttempt(db.Model):
    """One sign-in attempt, kept in the database so every process sees the same count."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_ip_created_at", "ip", "created_at"),
        Index("ix_login_attempts_email_created_at", "email", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str] = mapped_column(String(45))
    email: Mapped[str] = mapped_column(String(254))
    success: Mapped[bool] = mapped_column(Boolean)
    # "password" for the sign-in form, "totp" for a 2FA code or recovery code: each kind
    # is throttled on its own count.
    kind: Mapped[str] = mapped_column(String(8), default="password", server_default="password")
