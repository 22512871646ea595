"""Which tasks a user may reach.

A task about a client follows the client's scope (crm.clients.policy): whoever may see
the client may see its tasks, and nobody else, not even the assignee. A task about no
client belongs to the people on it: its assignee and its creator, their team for a
team-scoped role, everyone for a role that sees all records.
"""

from __future__ import annotations

from flask import abort
from sqlalchemy import ColumnElement, Select, and_, or_, select, true
from sqlalchemy.orm import contains_eager, joinedload

from crm.auth.models import User
from crm.auth.permissions import ClientScope
from crm.clients.policy import visible_clients
from crm.extensions import db
from crm.tasks.models import Task


def _clientless_condition(user: User) -> ColumnElement[bool]:
    scope = user.role.client_scope if user.role else ClientScope.OWN.value
    if scope == ClientScope.ALL.value:
        return true()
    people: list[int] | Select[tuple[int]] = [user.id]
    if scope == ClientScope.TEAM.value and user.team_id is not None:
        people = select(User.id).where(User.team_id == user.team_id)
    return or_(Task.assignee_id.in_(people), Task.created_by_id.in_(people))


def visible_tasks(user: User) -> ColumnElement[bool]:
    """The condition for a query that outer-joins Task.client (see `task_query`)."""
    return or_(
        and_(Task.client_id.is_not(None), visible_clients(user)),
        and_(Task.client_id.is_(None), _clientless_condition(user)),
    )


def task_query(user: User) -> Select[tuple[Task]]:
    """Tasks the user may see, with their client and assignee loaded."""
    return (
        select(Task)
        .outerjoin(Task.client)
        .options(contains_eager(Task.client), joinedload(Task.assignee))
        .where(visible_tasks(user))
    )


def get_task_or_404(user: User, task_id: int) -> Task:
    """The task, or 404 when it does not exist or lies outside the user's scope."""
    task = db.session.scalar(task_query(user).where(Task.id == task_id))
    if task is None:
        abort(404)
    return task
