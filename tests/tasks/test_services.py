"""The service functions the automatic jobs (consent expiry, retention) will call."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from crm.extensions import db
from crm.tasks.models import Task, TaskOrigin
from crm.tasks.services import complete_task, create_task, open_task_exists, reopen_task
from tests.conftest import make_client, make_user


def test_jobs_create_tasks_idempotently_by_origin_and_ref(app):
    with app.app_context():
        owner = make_user("owner@example.com", role="sales", name="Owner")
        client = make_client(owner_id=owner.id)

        def sweep() -> None:
            ref = "consent:42"
            if not open_task_exists(TaskOrigin.CONSENT_EXPIRY, ref):
                create_task(
                    "Renew consent or delete data",
                    assignee_id=owner.id,
                    client_id=client.id,
                    due_date=date(2030, 1, 31),
                    origin=TaskOrigin.CONSENT_EXPIRY,
                    origin_ref=ref,
                    notify=False,
                )
            db.session.commit()

        sweep()
        sweep()
        tasks = list(db.session.scalars(select(Task)))
        assert len(tasks) == 1
        assert (tasks[0].origin, tasks[0].origin_ref) == ("consent_expiry", "consent:42")
        assert tasks[0].created_by_id is None
        # Another origin with the same reference is a different task.
        assert not open_task_exists(TaskOrigin.RETENTION, "consent:42")
        # Once done, the job may open a new one (e.g. the next expiry).
        complete_task(tasks[0])
        db.session.commit()
        assert not open_task_exists("consent_expiry", "consent:42")
        sweep()
        assert db.session.scalar(select(func.count()).select_from(Task)) == 2


def test_complete_and_reopen_report_whether_anything_changed(app):
    with app.app_context():
        task = create_task("Toggle", assignee_id=None, notify=False)
        assert complete_task(task) is True
        assert complete_task(task) is False
        assert task.completed_at is not None
        assert reopen_task(task) is True
        assert reopen_task(task) is False
        assert task.completed_at is None


def test_create_task_tidies_the_title(app):
    with app.app_context():
        task = create_task(
            "  Call\n the   client  ", assignee_id=None, details="  \n ", notify=False
        )
        assert task.title == "Call the client"
        assert task.details is None
