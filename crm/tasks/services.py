from __future__ import annotations

from sqlalchemy import select

from crm.extensions import db
from crm.tasks.models import Task, TaskStatus


def open_tasks_for_client(client_id: int) -> list[Task]:
    stmt = (
        select(Task)
        .where(Task.client_id == client_id, Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_date.is_(None), Task.due_date, Task.id)
    )
    return list(db.session.scalars(stmt))
