"""Task actors (Dramatiq). Actors take ids, look their rows up, and do nothing when
the row is gone or the work no longer applies, so a redelivered message does no harm."""

from __future__ import annotations

from flask import current_app
from flask_babel import force_locale, format_date
from flask_babel import gettext as _

from crm.auth.models import User
from crm.extensions import db
from crm.mail import build_message, deliver
from crm.org.services import organisation
from crm.queue import actor
from crm.tasks.models import Task


def task_url(task_id: int) -> str:
    """The absolute link to a task, for emails (no request context in a worker)."""
    path = current_app.url_map.bind("localhost").build("tasks.show", {"task_id": task_id})
    return current_app.config["CRM_BASE_URL"].rstrip("/") + path


def _one_line(text: str) -> str:
    return " ".join(text.split())


def compose_assignment(task: Task, assignee: User) -> tuple[str, str]:
    """(subject, plain text body) of the 'task assigned to you' email."""
    creator = db.session.get(User, task.created_by_id) if task.created_by_id else None
    title = _one_line(task.title)
    subject = _("New task for you: %(title)s", title=title)
    lines = [
        _("Hello %(name)s,", name=assignee.display_name),
        "",
        _("%(who)s assigned a task to you:", who=creator.display_name)
        if creator
        else _("A task was assigned to you:"),
        "",
        f"    {title}",
    ]
    if task.client is not None:
        lines.append("    " + _("Client: %(name)s", name=task.client.display_name))
    if task.due_date is not None:
        lines.append("    " + _("Due: %(date)s", date=format_date(task.due_date, "long")))
    else:
        lines.append("    " + _("No due date."))
    if task.details:
        lines += ["", task.details]
    lines += ["", _("Open the task: %(url)s", url=task_url(task.id)), "", organisation().name]
    return subject, "\n".join(lines) + "\n"


@actor(max_retries=5, min_backoff=10_000)
def notify_task_assigned(task_id: int) -> None:
    """Email the assignee of a task that someone else gave them.

    Nothing is sent when the task is gone, done, unassigned, or its assignee can no
    longer sign in. If it was reassigned since, the current assignee is told.
    """
    task = db.session.get(Task, task_id)
    if task is None or not task.is_open or task.assignee_id is None:
        return
    assignee = db.session.get(User, task.assignee_id)
    if assignee is None or not assignee.active or not assignee.email:
        return
    locale = assignee.locale or organisation().default_locale or "en"
    with force_locale(locale):
        subject, text = compose_assignment(task, assignee)
    deliver(build_message(assignee.email, subject, text))
