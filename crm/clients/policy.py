"""Which clients a user may reach. One function gives the SQL condition for every list,
count, search and export; get_client_or_404 applies the same rule to one record."""

from __future__ import annotations

from flask import abort
from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm.interfaces import ORMOption

from crm.auth.models import User
from crm.auth.permissions import ClientScope
from crm.clients.models import Client
from crm.extensions import db


def visible_clients(user: User) -> ColumnElement[bool]:
    scope = user.role.client_scope if user.role else ClientScope.OWN.value
    if scope == ClientScope.ALL.value:
        return true()
    if scope == ClientScope.TEAM.value and user.team_id is not None:
        teammates = select(User.id).where(User.team_id == user.team_id)
        return or_(Client.owner_id == user.id, Client.owner_id.in_(teammates))
    return Client.owner_id == user.id


def get_client_or_404(user: User, client_id: int, *options: ORMOption) -> Client:
    """The client, or 404 when it does not exist or lies outside the user's scope
    (404, not 403, so ids cannot be probed). `options` are loader options, e.g. to
    load the owner and tags in the same query."""
    stmt = select(Client).where(Client.id == client_id, visible_clients(user))
    client = db.session.scalar(stmt.options(*options))
    if client is None:
        abort(404)
    return client
