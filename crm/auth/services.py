from __future__ import annotations

import secrets

from sqlalchemy import func, select

from crm.auth.models import Role, User, new_session_token
from crm.auth.passwords import dummy_hash, hash_password, password_problem, verify_password
from crm.auth.permissions import SHIPPED_ROLES
from crm.extensions import db
from crm.sqltypes import utcnow


class AccountError(ValueError):
    """A user-facing reason why an account change was refused."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def ensure_shipped_roles() -> None:
    """Create the shipped roles that are missing; never touch edited ones."""
    existing = set(db.session.scalars(select(Role.name)))
    for name, scope, permissions in SHIPPED_ROLES:
        if name not in existing:
            db.session.add(
                Role(
                    name=name, client_scope=scope.value, permissions=[p.value for p in permissions]
                )
            )
    db.session.flush()


def find_user(email: str) -> User | None:
    return db.session.scalar(select(User).where(func.lower(User.email) == normalise_email(email)))


def create_user(email: str, password: str, role_name: str, full_name: str = "") -> User:
    email = normalise_email(email)
    if "@" not in email:
        raise AccountError(f"{email!r} is not an email address")
    problem = password_problem(password, email=email, name=full_name)
    if problem is not None:
        raise AccountError(problem)
    if find_user(email) is not None:
        raise AccountError(f"a user with the email {email} exists already")
    ensure_shipped_roles()
    role = db.session.scalar(select(Role).where(Role.name == role_name))
    if role is None:
        names = ", ".join(db.session.scalars(select(Role.name).order_by(Role.name)))
        raise AccountError(f"no role named {role_name!r} (roles: {names})")
    user = User(
        email=email,
        full_name=full_name,
        password_hash=hash_password(password),
        role=role,
        password_changed_at=utcnow(),
    )
    db.session.add(user)
    db.session.flush()
    return user


def check_credentials(email: str, password: str) -> User | None:
    """The user, when the email and password match an active account; else None.

    Changes nothing: with two-factor authentication the password is only the first step,
    and the sign-in is recorded when the second one succeeds."""
    user = find_user(email)
    if user is None:
        verify_password(dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password) or not user.active:
        return None
    return user


def authenticate(email: str, password: str) -> User | None:
    """Like check_credentials, and records the sign-in time (a sign-in without 2FA)."""
    user = check_credentials(email, password)
    if user is not None:
        user.last_login_at = utcnow()
    return user


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def revoke_sessions(user: User) -> None:
    user.session_token = new_session_token()
