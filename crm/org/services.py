"""The organisation row, and the process-wide copies of the settings every request reads.

`shared(name, load)` keeps one copy per process of something derived from the settings
tables (organisation, allowed_networks, custom_fields, deal_stages) and reloads it when
the settings token differs. Database triggers replace the token on every write to those
tables (migration 0005), by any process or by hand in SQL, so a copy is never used once
its tables changed: the check costs one small query per request instead of one per
table. Tokens are random, so a token from a rolled-back write never comes back.

Copies are detached ORM objects or plain data, shared between threads: read them, never
change them (load the row in the request's session to edit it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, has_app_context
from sqlalchemy import ScalarSelect, event, select
from sqlalchemy.orm import Session

from crm.extensions import db
from crm.org.models import Organisation, SettingsGeneration

T = TypeVar("T")

WATCHED_TABLES = frozenset({"organisation", "allowed_networks", "custom_fields", "deal_stages"})
_G_TOKEN = "_crm_settings_token"  # noqa: S105 (a flask.g key, not a secret)


def settings_token() -> str:
    """The current token, read once per request (and again after this request itself
    wrote a settings table)."""
    token = g.get(_G_TOKEN)
    if token is None:
        token = db.session.scalar(
            select(SettingsGeneration.token).where(SettingsGeneration.id == 1)
        )
        token = g._crm_settings_token = token or ""
    return token


def settings_token_column() -> ScalarSelect[str]:
    """The token as a column, for a query every request sends anyway (the signed-in
    user's): it saves the token its own round trip. Pass the value to
    remember_settings_token()."""
    return select(SettingsGeneration.token).where(SettingsGeneration.id == 1).scalar_subquery()


def remember_settings_token(token: str | None) -> None:
    g._crm_settings_token = token or ""


def forget_settings_token() -> None:
    g.pop(_G_TOKEN, None)


def shared(name: str, load: Callable[[Session], T]) -> T:
    """The process's copy of `name`, loaded by `load(session)` when missing or stale.
    The loader gets a short-lived session on the request's connection (so it sees the
    request's own writes); what it returns is detached when that session closes."""
    token = settings_token()
    copies: dict[str, tuple[str, Any]] = current_app.extensions.setdefault("crm_shared", {})
    entry = copies.get(name)
    if entry is not None and entry[0] == token:
        return entry[1]
    with Session(bind=db.session.connection(), expire_on_commit=False) as session:
        value = load(session)
    copies[name] = (token, value)
    return value


@event.listens_for(Session, "after_flush")
def _forget_token_after_settings_write(session: Session, _context: Any) -> None:
    """A request that changed a settings table reads the (new) token again."""
    if not has_app_context() or g.get(_G_TOKEN) is None:
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        if getattr(obj, "__tablename__", None) in WATCHED_TABLES:
            forget_settings_token()
            return


def _load_organisation(session: Session) -> Organisation:
    org = session.get(Organisation, 1)
    if org is None:  # seeded by the first migration; recreate a deleted row
        organisation_for_update()
        org = session.get(Organisation, 1)
        assert org is not None
    return org


def organisation() -> Organisation:
    """The organisation's settings, for reading (a shared copy; see the module doc)."""
    return shared("organisation", _load_organisation)


def organisation_for_update() -> Organisation:
    """The organisation row in the request's session, created with defaults if missing."""
    org = db.session.get(Organisation, 1)
    if org is None:
        org = Organisation(id=1)
        db.session.add(org)
        db.session.flush()
    return org
