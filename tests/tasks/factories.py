from __future__ import annotations

from typing import Any

from crm.extensions import db
from crm.tasks.models import Task
from crm.tasks.services import create_task


def make_task(title: str = "Call back", **values: Any) -> Task:
    """A task straight through the service (no notification), committed."""
    values.setdefault("assignee_id", None)
    values.setdefault("notify", False)
    task = create_task(title, **values)
    db.session.commit()
    return task
