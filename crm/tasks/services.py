"""Staff tasks. Services change state and flush; the caller commits once.

`create_task` serves people (origin manual) and the automatic jobs to come (consent
expiry, retention, data requests), which pass an origin and an origin_ref and call
`open_task_exists` first so that a job run twice never opens the same task twice.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import joinedload

from crm.auth.models import User
from crm.extensions import db
from crm.org.services import organisation
from crm.queue import enqueue_after_commit
from crm.sqltypes import utcnow
from crm.tasks.models import Task, TaskOrigin, TaskStatus
from crm.tasks.policy import task_query

TASK_PAGE = 50


class TaskView(enum.StrEnum):
    """The tabs of the My tasks page."""

    OPEN = "open"  # assigned to me, open
    DONE = "done"  # assigned to me, completed
    DELEGATED = "delegated"  # created by me for someone else, open


def org_today() -> date:
    """Today's date in the organisation's time zone (what 'overdue' is measured by)."""
    try:
        zone = ZoneInfo(organisation().timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.now(UTC).astimezone(zone).date()


def open_tasks_for_client(client_id: int) -> list[Task]:
    """The client's open tasks: earliest due first, undated last."""
    stmt = (
        select(Task)
        .options(joinedload(Task.assignee).load_only(*User.display_columns()))
        .where(Task.client_id == client_id, Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_date.is_(None), Task.due_date, Task.id)
    )
    return list(db.session.scalars(stmt))


def open_task_exists(origin: TaskOrigin | str, origin_ref: str) -> bool:
    """Whether an open task from this origin and reference exists (for idempotent jobs)."""
    stmt = select(
        exists().where(
            Task.origin == TaskOrigin(origin).value,
            Task.origin_ref == origin_ref,
            Task.status == TaskStatus.OPEN.value,
        )
    )
    return bool(db.session.scalar(stmt))


def create_task(
    title: str,
    *,
    assignee_id: int | None,
    created_by: User | None = None,
    client_id: int | None = None,
    details: str | None = None,
    due_date: date | None = None,
    origin: TaskOrigin | str = TaskOrigin.MANUAL,
    origin_ref: str | None = None,
    notify: bool = True,
) -> Task:
    """A new open task. The assignee is emailed after the commit, unless they created
    it themselves (or `notify` is False, e.g. for a bulk job that sends a digest)."""
    task = Task(
        title=" ".join(title.split())[:200],
        details=(details or "").strip() or None,
        client_id=client_id,
        assignee_id=assignee_id,
        due_date=due_date,
        status=TaskStatus.OPEN.value,
        origin=TaskOrigin(origin).value,
        origin_ref=origin_ref,
        created_by_id=created_by.id if created_by else None,
    )
    db.session.add(task)
    db.session.flush()
    if notify:
        _notify_if_delegated(task, created_by)
    return task


def update_task(
    task: Task,
    *,
    title: str,
    details: str | None,
    assignee_id: int | None,
    due_date: date | None,
    changed_by: User,
) -> None:
    """Edit a task; a new assignee (other than the editor) is notified after the commit."""
    reassigned = assignee_id != task.assignee_id
    task.title = " ".join(title.split())[:200]
    task.details = (details or "").strip() or None
    task.assignee_id = assignee_id
    task.due_date = due_date
    db.session.flush()
    if reassigned:
        db.session.expire(task, ["assignee"])
        _notify_if_delegated(task, changed_by)


def _notify_if_delegated(task: Task, by: User | None) -> None:
    from crm.tasks.tasks import notify_task_assigned

    if task.assignee_id is not None and (by is None or task.assignee_id != by.id):
        enqueue_after_commit(notify_task_assigned, task.id)


def complete_task(task: Task) -> bool:
    """Mark done; False when it was done already (a double click changes nothing)."""
    if not task.is_open:
        return False
    task.status = TaskStatus.DONE.value
    task.completed_at = utcnow()
    db.session.flush()
    return True


def reopen_task(task: Task) -> bool:
    if task.is_open:
        return False
    task.status = TaskStatus.OPEN.value
    task.completed_at = None
    db.session.flush()
    return True


def delete_task(task: Task) -> None:
    db.session.delete(task)
    db.session.flush()


def my_tasks_query(user: User, view: TaskView) -> Select[tuple[Task]]:
    """One tab of My tasks, in display order, within the user's scope.

    Open tasks: earliest due date first, so overdue ones lead, then the undated ones.
    """
    stmt = task_query(user)
    if view == TaskView.DONE:
        return stmt.where(
            Task.assignee_id == user.id, Task.status == TaskStatus.DONE.value
        ).order_by(Task.completed_at.desc(), Task.id.desc())
    if view == TaskView.DELEGATED:
        stmt = stmt.where(
            Task.created_by_id == user.id,
            Task.assignee_id.is_distinct_from(user.id),
            Task.status == TaskStatus.OPEN.value,
        )
    else:
        stmt = stmt.where(Task.assignee_id == user.id, Task.status == TaskStatus.OPEN.value)
    return stmt.order_by(Task.due_date.is_(None), Task.due_date, Task.id)


def my_task_counts(user: User, today: date) -> dict[str, int]:
    """Badge counts for the tabs: open, overdue, done, delegated."""
    counts: dict[str, int] = {}
    for view in TaskView:
        stmt = my_tasks_query(user, view).order_by(None)
        counts[view.value] = _count(stmt)
        if view == TaskView.OPEN:
            counts["overdue"] = _count(stmt.where(Task.due_date < today))
    return counts


def _count(stmt: Select[tuple[Task]]) -> int:
    return db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
