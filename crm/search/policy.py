"""Who sees and who changes a saved filter.

A private filter is its owner's alone: to anyone else it does not exist (404). A shared
filter is seen by everyone who may see clients; only its owner changes it, or an admin
with settings:manage (who may need to tidy or withdraw what others share)."""

from __future__ import annotations

from flask import abort
from sqlalchemy import ColumnElement, or_, select

from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.extensions import db
from crm.search.models import SavedFilter


def filters_visible_to(user: User) -> ColumnElement[bool]:
    return or_(SavedFilter.owner_id == user.id, SavedFilter.shared.is_(True))


def may_change(user: User, saved: SavedFilter) -> bool:
    if saved.owner_id == user.id:
        return True
    return saved.shared and user.can(Permission.SETTINGS_MANAGE)


def get_filter_or_404(user: User, filter_id: int) -> SavedFilter:
    saved = db.session.scalar(
        select(SavedFilter).where(SavedFilter.id == filter_id, filters_visible_to(user))
    )
    if saved is None:
        abort(404)
    return saved


def get_filter_to_change(user: User, filter_id: int) -> SavedFilter:
    """The filter, if the user may change it: 404 when they cannot see it, 403 when
    they can see it but it is someone else's."""
    saved = get_filter_or_404(user, filter_id)
    if not may_change(user, saved):
        abort(403)
    return saved
