"""Background messages leave only after the commit, and workers run them."""

from __future__ import annotations

import os
import uuid
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dramatiq
import pytest

from crm.extensions import db
from crm.mail import send_email
from crm.queue import AppContextMiddleware, broker, enqueue_after_commit, make_broker


@pytest.fixture
def stub_broker():  # type: ignore[no-untyped-def]
    broker.flush_all()
    yield broker
    broker.flush_all()


def _queued(stub) -> int:  # type: ignore[no-untyped-def]
    return sum(q.qsize() for q in stub.queues.values())


def test_messages_wait_for_the_commit(app, stub_broker):
    with app.app_context():
        enqueue_after_commit(send_email, "a@example.com", "Temat", "Treść")
        assert _queued(stub_broker) == 0
        db.session.commit()
        assert _queued(stub_broker) == 1


def test_messages_are_dropped_on_rollback(app, stub_broker):
    with app.app_context():
        enqueue_after_commit(send_email, "a@example.com", "Temat", "Treść")
        db.session.rollback()
        db.session.commit()
    assert _queued(stub_broker) == 0


def test_a_worker_delivers_email_to_the_outbox(app, stub_broker):
    outbox = Path(app.config["CRM_OUTBOX_DIR"])
    before = set(outbox.glob("*.eml")) if outbox.exists() else set()
    worker = dramatiq.Worker(stub_broker, worker_timeout=100)
    worker.start()
    try:
        with app.app_context():
            enqueue_after_commit(
                send_email,
                "jiri.dvorak@example.cz",
                "Připomínka – Łódź",
                "Dobrý den, pane Dvořáku.",
            )
            db.session.commit()
        stub_broker.join(send_email.queue_name, timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    new = set(outbox.glob("*.eml")) - before
    assert len(new) == 1
    message = BytesParser(policy=policy.default).parsebytes(new.pop().read_bytes())
    assert message["Subject"] == "Připomínka – Łódź"
    assert message["To"] == "jiri.dvorak@example.cz"
    assert "pane Dvořáku" in message.get_content()


REDIS_URL = os.environ.get("CRM_TEST_REDIS_URL")


@pytest.mark.skipif(not REDIS_URL, reason="CRM_TEST_REDIS_URL is not set")
def test_redis_broker_round_trip(app):
    """The production broker path: a message through real Redis to a worker thread."""
    redis_broker = make_broker(REDIS_URL)
    redis_broker.add_middleware(AppContextMiddleware())
    queue = f"crm_test_{uuid.uuid4().hex[:8]}"
    redis_actor = dramatiq.actor(
        send_email.fn, broker=redis_broker, queue_name=queue, actor_name=f"send_email_{queue}"
    )
    outbox = Path(app.config["CRM_OUTBOX_DIR"])
    before = set(outbox.glob("*.eml")) if outbox.exists() else set()
    redis_actor.send("redis@example.com", "Przez Redisa", "Wiadomość")
    worker = dramatiq.Worker(redis_broker, worker_timeout=100)
    worker.start()
    try:
        redis_broker.join(queue, timeout=10_000)
        worker.join()
    finally:
        worker.stop()
        redis_broker.flush(queue)
        redis_broker.close()
    new = set(outbox.glob("*.eml")) - before
    assert len(new) == 1
    assert (
        "Przez Redisa"
        in BytesParser(policy=policy.default).parsebytes(new.pop().read_bytes())["Subject"]
    )
