"""The 'task assigned to you' email: sent after the commit, once, by an idempotent actor."""

from __future__ import annotations

import email
from datetime import date
from email.policy import default as default_policy
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from crm.extensions import db
from crm.queue import broker
from crm.tasks.models import Task
from crm.tasks.tasks import notify_task_assigned
from tests.conftest import make_client, make_user
from tests.tasks.factories import make_task


@pytest.fixture
def stub_queue():  # type: ignore[no-untyped-def]
    if not isinstance(broker, StubBroker):
        pytest.skip("inspects the in-memory broker (CRM_BROKER_URL is set)")
    broker.flush_all()
    yield broker.queues["default"]
    broker.flush_all()


def _outbox(app) -> set[Path]:  # type: ignore[no-untyped-def]
    folder = Path(app.config["CRM_OUTBOX_DIR"])
    return set(folder.glob("*.eml")) if folder.exists() else set()


def _queued(queue) -> list[dramatiq.Message]:  # type: ignore[no-untyped-def]
    """Take the waiting messages off the queue (marking each done, or a later
    broker.join() would wait for them forever)."""
    messages = []
    while not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get_nowait()))
        queue.task_done()
    return messages


def test_actor_writes_an_email_naming_task_due_date_and_link(app):
    with app.app_context():
        boss = make_user("boss@example.com", role="manager", name="Barbara Boss")
        worker = make_user("jan@example.com", role="sales", name="Jan Kowalski")
        client = make_client(first_name="Łucja", last_name="Dvořák")
        task = make_task(
            "Renew the contract",
            assignee_id=worker.id,
            created_by=boss,
            client_id=client.id,
            due_date=date(2031, 3, 14),
            details="Bring the signed copy.",
        )
        task_id = task.id
    before = _outbox(app)
    with app.app_context():
        notify_task_assigned.fn(task_id)
    new = _outbox(app) - before
    assert len(new) == 1
    message = email.message_from_bytes(new.pop().read_bytes(), policy=default_policy)
    assert message["To"] == "jan@example.com"
    assert "Renew the contract" in message["Subject"]
    body = message.get_content()
    assert "Hello Jan Kowalski" in body
    assert "Barbara Boss assigned a task to you" in body
    assert "Renew the contract" in body
    assert "Łucja Dvořák" in body
    assert "March 14, 2031" in body
    assert "Bring the signed copy." in body
    assert f"{app.config['CRM_BASE_URL']}/tasks/{task_id}" in body


def test_actor_does_nothing_when_the_task_is_gone_or_done(app):
    with app.app_context():
        worker = make_user("jan@example.com", role="sales", name="Jan")
        done = make_task("Already done", assignee_id=worker.id)
        done.status = "done"
        db.session.commit()
        done_id = done.id
        gone_id = make_task("Deleted", assignee_id=worker.id).id
        db.session.delete(db.session.get(Task, gone_id))
        db.session.commit()
    before = _outbox(app)
    with app.app_context():
        notify_task_assigned.fn(gone_id)
        notify_task_assigned.fn(done_id)
        notify_task_assigned.fn(987654)
    assert _outbox(app) == before


def test_assigning_to_someone_else_enqueues_one_message_after_commit(admin_client, app, stub_queue):
    with app.app_context():
        colleague_id = make_user("ola@example.com", role="sales", name="Ola").id
    assert stub_queue.qsize() == 0
    response = admin_client.post(
        "/tasks/new", data={"title": "For Ola", "assignee_id": colleague_id}
    )
    assert response.status_code == 302
    assert stub_queue.qsize() == 1
    (message,) = _queued(stub_queue)
    with app.app_context():
        task_id = db.session.query(Task.id).scalar()
    assert message.actor_name == "notify_task_assigned"
    assert message.args == (task_id,)


def test_no_message_for_my_own_tasks_or_when_nothing_is_saved(admin_client, app, stub_queue):
    with app.app_context():
        from crm.auth.services import find_user

        admin_id = find_user("admin@example.com").id
        colleague_id = make_user("ola@example.com", role="sales", name="Ola").id
    admin_client.post("/tasks/new", data={"title": "Mine", "assignee_id": admin_id})
    assert stub_queue.qsize() == 0
    # A form with errors rolls nothing into the database and sends nothing.
    admin_client.post("/tasks/new", data={"title": "", "assignee_id": colleague_id})
    assert stub_queue.qsize() == 0


def test_reassigning_on_edit_notifies_the_new_assignee(admin_client, app, stub_queue):
    with app.app_context():
        from crm.auth.services import find_user

        admin = find_user("admin@example.com")
        admin_id = admin.id
        colleague_id = make_user("ola@example.com", role="sales", name="Ola").id
        task_id = make_task("Pass it on", assignee_id=admin_id, created_by=admin).id
    admin_client.post(
        f"/tasks/{task_id}/edit", data={"title": "Pass it on", "assignee_id": admin_id}
    )
    assert stub_queue.qsize() == 0  # unchanged assignee: no email
    admin_client.post(
        f"/tasks/{task_id}/edit", data={"title": "Pass it on", "assignee_id": colleague_id}
    )
    assert [m.args for m in _queued(stub_queue)] == [(task_id,)]


def test_a_rolled_back_task_sends_nothing(app, stub_queue):
    from crm.tasks.services import create_task

    with app.app_context():
        worker = make_user("jan@example.com", role="sales", name="Jan")
        create_task("Never saved", assignee_id=worker.id)
        db.session.rollback()
    assert stub_queue.qsize() == 0
