"""Users, roles and teams: invitations, password resets, deactivation, the role matrix.

Services change state and flush; the view (or CLI command) commits. Emails are queued
with enqueue_after_commit, so a link never arrives for a token that was rolled back.

Guard: no change may leave the installation without an active user who can manage
users (one who has a usable password and a role granting users:manage); otherwise
nobody could invite, reset or reactivate anyone from the web any more.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import Select, delete, func, select, text, update

from crm.auth.models import Role, Team, User
from crm.auth.passwords import (
    UNUSABLE_PREFIX,
    has_usable_password,
    hash_password,
    unusable_password,
)
from crm.auth.permissions import SHIPPED_ROLES, ClientScope, Permission
from crm.auth.services import AccountError, ensure_shipped_roles, find_user, revoke_sessions
from crm.extensions import db
from crm.mail import send_email
from crm.org.services import organisation
from crm.queue import enqueue_after_commit
from crm.security.models import LoginAttempt
from crm.sqltypes import utcnow
from crm.users.models import AccountToken
from crm.web.urls import external_url

INVITE = "invite"
RESET = "reset"
TOKEN_LIFETIME = {INVITE: timedelta(days=7), RESET: timedelta(hours=1)}
SHIPPED_ROLE_NAMES = frozenset(name for name, _scope, _perms in SHIPPED_ROLES)

# "Forgot your password?" requests, counted in login_attempts with kind="reset".
RESET_KIND = "reset"
RESET_WINDOW = timedelta(hours=1)
MAX_RESETS_PER_EMAIL = 3
MAX_RESETS_PER_IP = 20

# Names the PostgreSQL advisory lock that serialises the "last manager" checks.
ACCESS_LOCK_KEY = 0x55534552  # "USER"


# --- helpers ---------------------------------------------------------------------------


def is_pending(user: User) -> bool:
    """Invited and has not chosen a password yet."""
    return not has_usable_password(user.password_hash)


def clean_name(value: str | None, limit: int = 200) -> str:
    return " ".join((value or "").split())[:limit]


def clean_email(value: str) -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise AccountError(_("Enter a valid email address.")) from None


def users_query() -> Select[tuple[User]]:
    """Every user for the admin list: active first, then by name and email."""
    return select(User).order_by(
        User.active.desc(), func.lower(User.full_name), func.lower(User.email), User.id
    )


def all_roles() -> list[Role]:
    ensure_shipped_roles()
    return list(db.session.scalars(select(Role).order_by(Role.name)))


def all_teams() -> list[Team]:
    return list(db.session.scalars(select(Team).order_by(func.lower(Team.name))))


def member_counts(column: Any) -> dict[int, int]:
    """{role or team id: number of users} for User.role_id or User.team_id."""
    rows = db.session.execute(select(column, func.count(User.id)).group_by(column))
    return {key: count for key, count in rows if key is not None}


# --- the "someone can still manage users" guard ----------------------------------------


def _serialise_access_changes() -> None:
    """Two admins demoting each other at once must not both pass the guard.

    PostgreSQL: a transaction-scoped advisory lock; the count that follows sees what the
    previous holder committed. SQLite has one writer, and a transaction whose snapshot
    went stale is refused when it tries to write, so the second change fails instead.
    """
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ACCESS_LOCK_KEY})


def managers_after(
    *,
    user_roles: dict[int, int] | None = None,
    role_grants: dict[int, bool] | None = None,
    inactive: frozenset[int] = frozenset(),
) -> int:
    """How many users could manage users after the described change."""
    _serialise_access_changes()
    grants = {
        role.id: role.grants(Permission.USERS_MANAGE) for role in db.session.scalars(select(Role))
    }
    grants.update(role_grants or {})
    rows = db.session.execute(
        select(User.id, User.role_id).where(
            User.active.is_(True), User.password_hash.not_like(f"{UNUSABLE_PREFIX}%")
        )
    )
    return sum(
        1
        for user_id, role_id in rows
        if user_id not in inactive and grants.get((user_roles or {}).get(user_id, role_id))
    )


def is_last_manager(user: User) -> bool:
    return (
        user.active
        and not is_pending(user)
        and user.role.grants(Permission.USERS_MANAGE)
        and managers_after(inactive=frozenset({user.id})) == 0
    )


def last_manager_message() -> str:
    return _(
        "This would leave no active user who can manage users and roles. "
        "Give another active user that permission first."
    )


def _refuse_if_no_manager_left(**change: Any) -> None:
    if managers_after(**change) == 0:
        raise AccountError(last_manager_message())


# --- tokens ----------------------------------------------------------------------------


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def issue_token(user: User, purpose: str, created_by: User | None) -> str:
    """A new link for `user`; the previous unused link of the same kind stops working."""
    db.session.execute(
        delete(AccountToken).where(
            AccountToken.user_id == user.id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
        )
    )
    raw = secrets.token_urlsafe(32)
    db.session.add(
        AccountToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=token_digest(raw),
            expires_at=utcnow() + TOKEN_LIFETIME[purpose],
            created_by_id=created_by.id if created_by else None,
        )
    )
    db.session.flush()
    return raw


class TokenError(Exception):
    """Why a link cannot be used: unknown, used, expired or inactive."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def redeemable_token(raw: str, purpose: str, now: datetime | None = None) -> AccountToken:
    """The token behind a link, if it can still be used; else TokenError."""
    if not raw or len(raw) > 128:
        raise TokenError("unknown")
    token = db.session.scalar(
        select(AccountToken).where(
            AccountToken.token_hash == token_digest(raw), AccountToken.purpose == purpose
        )
    )
    if token is None:
        raise TokenError("unknown")
    if token.used_at is not None:
        raise TokenError("used")
    if token.expires_at <= (now or utcnow()):
        raise TokenError("expired")
    if not token.user.active:
        raise TokenError("inactive")
    if purpose == INVITE and not is_pending(token.user):
        raise TokenError("used")  # the password was set another way (e.g. a reset)
    return token


def _forget_tokens(user: User) -> None:
    """Outstanding links stop working (after a password change or deactivation)."""
    db.session.execute(
        delete(AccountToken).where(AccountToken.user_id == user.id, AccountToken.used_at.is_(None))
    )


# --- emails ----------------------------------------------------------------------------


def _recipient_locale(user: User) -> str:
    return user.locale or organisation().default_locale or "en"


def _queue_email(user: User, subject: str, lines: list[str]) -> None:
    enqueue_after_commit(send_email, user.email, subject, "\n".join(lines) + "\n")


def send_invitation(user: User, raw: str, by: User | None) -> None:
    org = organisation().name
    link = external_url("users.accept_invite", token=raw)
    with force_locale(_recipient_locale(user)):
        subject = _("You are invited to %(org)s", org=org)
        lines = [
            _("Hello %(name)s,", name=user.display_name),
            "",
            _("%(who)s invited you to the CRM of %(org)s.", who=by.display_name, org=org)
            if by
            else _("You are invited to the CRM of %(org)s.", org=org),
            _("Your sign-in is %(email)s. Choose your password here:", email=user.email),
            "",
            f"    {link}",
            "",
            _("The link works once and expires in 7 days."),
        ]
    _queue_email(user, subject, lines)


def send_reset_link(user: User, raw: str) -> None:
    org = organisation().name
    link = external_url("users.reset_password", token=raw)
    with force_locale(_recipient_locale(user)):
        subject = _("Reset your password for %(org)s", org=org)
        lines = [
            _("Hello %(name)s,", name=user.display_name),
            "",
            _("Someone asked to reset the password of %(email)s.", email=user.email),
            _("Choose a new password here:"),
            "",
            f"    {link}",
            "",
            _("The link works once and expires in 1 hour."),
            _("If you did not ask for this, ignore this email: your password stays as it is."),
        ]
    _queue_email(user, subject, lines)


# --- users -----------------------------------------------------------------------------


@dataclass
class UserSpec:
    full_name: str
    role: Role
    team: Team | None


def invite_user(email: str, spec: UserSpec, by: User | None) -> tuple[User, str]:
    """A new user who cannot sign in until they choose a password through the link."""
    email = clean_email(email)
    if find_user(email) is not None:
        raise AccountError(_("A user with this email exists already."))
    user = User(
        email=email,
        full_name=clean_name(spec.full_name),
        password_hash=unusable_password(),
        role=spec.role,
        team=spec.team,
    )
    db.session.add(user)
    db.session.flush()
    return user, issue_token(user, INVITE, by)


def resend_invitation(user: User, by: User | None) -> str:
    if not is_pending(user):
        raise AccountError(_("%(email)s has chosen a password already.", email=user.email))
    if not user.active:
        raise AccountError(_("Reactivate the user before inviting them again."))
    return issue_token(user, INVITE, by)


def update_user(user: User, spec: UserSpec) -> dict[str, tuple[Any, Any]]:
    """Apply the edit; returns {field: (old, new)} of what changed."""
    before = {
        "full_name": user.full_name,
        "role": user.role.name,
        "team": user.team.name if user.team else None,
    }
    if spec.role.id != user.role_id:
        _refuse_if_no_manager_left(user_roles={user.id: spec.role.id})
    user.full_name = clean_name(spec.full_name)
    user.role = spec.role
    user.team = spec.team
    db.session.flush()
    after = {
        "full_name": user.full_name,
        "role": spec.role.name,
        "team": spec.team.name if spec.team else None,
    }
    return {key: (before[key], after[key]) for key in before if before[key] != after[key]}


def deactivation_problem(user: User, by: User) -> str | None:
    """Why `by` may not deactivate `user` (a message), or None."""
    if user.id == by.id:
        return _("You cannot deactivate your own account.")
    if is_last_manager(user):
        return last_manager_message()
    return None


def deactivate_user(user: User, by: User) -> None:
    """The user can no longer sign in; every session of theirs ends now."""
    problem = deactivation_problem(user, by)
    if problem is not None:
        raise AccountError(problem)
    user.active = False
    revoke_sessions(user)
    _forget_tokens(user)
    db.session.flush()


def reactivate_user(user: User) -> None:
    user.active = True
    db.session.flush()


def set_password(user: User, password: str) -> None:
    """Store a new password (already checked against the rules); old links stop working."""
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    _forget_tokens(user)
    db.session.flush()


def accept_invitation(token: AccountToken, password: str) -> User:
    user = token.user
    token.used_at = utcnow()  # before set_password, which removes unused links
    db.session.flush()
    set_password(user, password)
    return user


def complete_reset(token: AccountToken, password: str) -> User:
    """New password, the link burnt, and every session of the user signed out."""
    user = token.user
    token.used_at = utcnow()  # before set_password, which removes unused links
    db.session.flush()
    set_password(user, password)
    revoke_sessions(user)
    db.session.flush()
    return user


def change_password(user: User, new: str) -> None:
    """The user's own change (current password checked by the caller): every session
    ends; the caller signs the current one in again with the new token."""
    set_password(user, new)
    revoke_sessions(user)
    db.session.flush()


# --- forgotten passwords ---------------------------------------------------------------


def reset_requests_throttled(ip: str, email: str, now: datetime | None = None) -> bool:
    since = (now or utcnow()) - RESET_WINDOW

    def count(*conditions: Any) -> int:
        return (
            db.session.scalar(
                select(func.count(LoginAttempt.id)).where(
                    LoginAttempt.kind == RESET_KIND, LoginAttempt.created_at >= since, *conditions
                )
            )
            or 0
        )

    if email and count(LoginAttempt.email == email) >= MAX_RESETS_PER_EMAIL:
        return True
    return bool(ip) and count(LoginAttempt.ip == ip) >= MAX_RESETS_PER_IP


def request_reset(ip: str, email: str) -> User | None:
    """Record the request and, for an active user, send a link; the caller answers the
    same whatever happened, so the page never tells whether an address has an account.

    Requests are stored as successful attempts: they must not count as failed sign-ins
    (or anyone could lock a colleague out by asking for resets)."""
    email = (email or "").strip().lower()[:254]
    db.session.add(LoginAttempt(ip=(ip or "")[:45], email=email, success=True, kind=RESET_KIND))
    db.session.flush()
    user = find_user(email) if email else None
    if user is None or not user.active:
        return None
    send_reset_link(user, issue_token(user, RESET, None))
    return user


def send_admin_reset(user: User, by: User) -> None:
    if not user.active:
        raise AccountError(_("Reactivate the user before sending a password reset."))
    send_reset_link(user, issue_token(user, RESET, by))


# --- roles -----------------------------------------------------------------------------


class NameRefused(AccountError):
    """The name of a role or team is taken, empty or fixed."""


@dataclass
class RoleSpec:
    name: str
    permissions: list[str]
    client_scope: str
    require_2fa: bool


def _clean_role(spec: RoleSpec) -> RoleSpec:
    known = [p.value for p in Permission]
    name = clean_name(spec.name, 64)
    if not name:
        raise NameRefused(_("Give the role a name."))
    if spec.client_scope not in {s.value for s in ClientScope}:
        raise AccountError(_("Choose which clients the role reaches."))
    return RoleSpec(
        name=name,
        permissions=[p for p in known if p in set(spec.permissions)],
        client_scope=spec.client_scope,
        require_2fa=bool(spec.require_2fa),
    )


def _name_taken(model: Any, name: str, exclude_id: int | None) -> bool:
    query = select(model.id).where(func.lower(model.name) == name.lower())
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    return db.session.scalar(query) is not None


def create_role(spec: RoleSpec) -> Role:
    spec = _clean_role(spec)
    if _name_taken(Role, spec.name, None):
        raise NameRefused(_("A role with this name exists already."))
    role = Role(
        name=spec.name,
        permissions=spec.permissions,
        client_scope=spec.client_scope,
        require_2fa=spec.require_2fa,
    )
    db.session.add(role)
    db.session.flush()
    return role


def update_role(role: Role, spec: RoleSpec) -> dict[str, Any]:
    """Apply the matrix; returns the audit details (permission diff, scope, 2FA)."""
    spec = _clean_role(spec)
    if spec.name != role.name:
        if role.name in SHIPPED_ROLE_NAMES:
            raise NameRefused(_("Roles that come with the CRM keep their names."))
        if _name_taken(Role, spec.name, role.id):
            raise NameRefused(_("A role with this name exists already."))
    granted = Permission.USERS_MANAGE.value in spec.permissions
    if role.grants(Permission.USERS_MANAGE) and not granted:
        _refuse_if_no_manager_left(role_grants={role.id: False})
    old = set(role.permissions or [])
    details: dict[str, Any] = {
        "added": [p for p in spec.permissions if p not in old],
        "removed": [p.value for p in Permission if p.value in old - set(spec.permissions)],
        "scope": [role.client_scope, spec.client_scope],
        "require_2fa": [bool(role.require_2fa), spec.require_2fa],
    }
    if spec.name != role.name:
        details["name"] = [role.name, spec.name]
    role.name = spec.name
    role.permissions = spec.permissions  # a new list: JSON columns track assignment only
    role.client_scope = spec.client_scope
    role.require_2fa = spec.require_2fa
    db.session.flush()
    return details


def role_delete_problem(role: Role) -> str | None:
    if role.name in SHIPPED_ROLE_NAMES:
        return _("Roles that come with the CRM cannot be deleted; change their permissions.")
    users = member_counts(User.role_id).get(role.id, 0)
    if users:
        return _(
            "%(n)s user(s) have this role. Give them another role first; deactivated users "
            "count too.",
            n=users,
        )
    return None


def delete_role(role: Role) -> None:
    problem = role_delete_problem(role)
    if problem is not None:
        raise AccountError(problem)
    db.session.delete(role)
    db.session.flush()


# --- teams -----------------------------------------------------------------------------


def _team_name(name: str, exclude_id: int | None) -> str:
    name = clean_name(name, 100)
    if not name:
        raise NameRefused(_("Give the team a name."))
    if _name_taken(Team, name, exclude_id):
        raise NameRefused(_("A team with this name exists already."))
    return name


def create_team(name: str) -> Team:
    team = Team(name=_team_name(name, None))
    db.session.add(team)
    db.session.flush()
    return team


def rename_team(team: Team, name: str) -> tuple[str, str]:
    old, team.name = team.name, _team_name(name, team.id)
    db.session.flush()
    return old, team.name


def delete_team(team: Team) -> int:
    """Delete the team; its members stay, without a team. Returns how many there were."""
    members = db.session.execute(
        update(User).where(User.team_id == team.id).values(team_id=None)
    ).rowcount
    db.session.delete(team)
    db.session.flush()
    return members or 0
