from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.auth.permissions import ClientScope, Permission
from crm.extensions import db
from crm.sqltypes import UTCDateTime, utcnow


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


class Role(db.Model):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    client_scope: Mapped[str] = mapped_column(String(8), default=ClientScope.OWN.value)
    require_2fa: Mapped[bool] = mapped_column(Boolean, default=False)

    def grants(self, permission: Permission) -> bool:
        return permission.value in (self.permissions or [])


class Team(db.Model):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Flask-Login keeps this token, not the id, in the session: rotating it signs the
    # user out everywhere (password change, 2FA reset, deactivation).
    session_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_session_token)
    locale: Mapped[str | None] = mapped_column(String(8))
    # Per-user view settings, e.g. the chosen client list columns.
    preferences: Mapped[dict] = mapped_column(JSON, default=dict)
    # TOTP (RFC 6238): the base32 secret is set at enrolment and counts only once a code
    # confirmed it (totp_enabled_at). totp_last_step is the time step of the last code
    # accepted, so that code (and any older one) cannot be replayed.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Loaded with the signed-in user (crm.auth.views.load_user); elsewhere a user is
    # mostly a name on a row, and joining roles into every such row costs time.
    role: Mapped[Role] = relationship()
    team: Mapped[Team | None] = relationship()

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.active

    def get_id(self) -> str:
        return self.session_token

    def can(self, permission: Permission) -> bool:
        return self.active and self.role is not None and self.role.grants(permission)

    @classmethod
    def display_columns(cls) -> tuple[Any, ...]:
        """What `display_name` reads: the columns to load for a user shown next to a
        note, task, deal or client (`joinedload(...).load_only(*User.display_columns())`),
        rather than every column, password hash and TOTP secret included."""
        return (cls.id, cls.full_name, cls.email)

    @property
    def display_name(self) -> str:
        return self.full_name or self.email

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class RecoveryCode(db.Model):
    """One of a user's one-time 2FA recovery codes, stored hashed; used_at burns it."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
