"""Campaign fixtures: a real SMTP server, a queue with a worker (StubBroker, and Redis
when CRM_TEST_REDIS_URL is set), lists with confirmed subscribers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from flask import Flask

import crm.queue
from crm.campaigns import services
from crm.campaigns.models import Campaign
from crm.campaigns.tasks import send_campaign
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import MailingList
from tests.campaigns.smtp_server import SMTPTestServer
from tests.conftest import make_client, make_user
from tests.consents.factories import make_purpose

REDIS_URL = os.environ.get("CRM_TEST_REDIS_URL")
QUEUES = ["stub"] + (["redis"] if REDIS_URL else [])

SETTINGS = {
    "CRM_BASE_URL": "https://crm.example.com",
    "CRM_CAMPAIGN_BATCH_SIZE": 5,
    "CRM_CAMPAIGN_RETRY_SECONDS": 0,
    "CRM_CAMPAIGN_MAX_ATTEMPTS": 5,
    "CRM_CAMPAIGN_STOP_CHECK_SECONDS": 0,
    "CRM_CAMPAIGN_PARALLEL": 2,
    "CRM_MAIL_RATE": 0,
}


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SMTPTestServer]:
    server = SMTPTestServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp(app: Flask, smtp_server: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """The SMTP server, emptied, well-behaved, and named by the app's settings."""
    handler = smtp_server.handler
    handler.clear()
    handler.fail_share = 0.0
    handler.reject = set()
    handler.pipelining = True
    keys = [*SETTINGS, "CRM_SMTP_URL"]
    saved = {key: app.config.get(key) for key in keys}
    app.config.update(SETTINGS, CRM_SMTP_URL=smtp_server.url)
    yield smtp_server
    app.config.update(saved)


@pytest.fixture(autouse=True)
def _empty_stub_broker() -> Iterator[None]:
    """Direct calls of the services queue messages too; no test sees another's."""
    crm.queue.broker.flush_all()
    yield
    crm.queue.broker.flush_all()


class Queue:
    """A broker with one worker thread, started by `join()`: the tests share one
    database connection, which two threads must not use at once, so the worker runs
    only while the test waits for it."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)

    def join(self, timeout_ms: int = 30_000) -> None:
        self.worker.start()
        try:
            self.broker.join(self.queue_name, timeout=timeout_ms)
            self.worker.join()
        finally:
            self.worker.stop()
            self.worker = dramatiq.Worker(self.broker, worker_threads=1, worker_timeout=50)


@pytest.fixture(params=QUEUES)
def queue(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    if request.param == "stub":
        crm.queue.broker.flush_all()
        yield Queue(crm.queue.broker, send_campaign.queue_name)
        crm.queue.broker.flush_all()
        return
    # Redis: the same actor, bound to a Redis broker and a queue of its own, and the
    # after-commit dispatch pointed at that broker.
    redis_broker = crm.queue.make_broker(REDIS_URL)
    redis_broker.add_middleware(crm.queue.AppContextMiddleware())
    name = f"crm_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(crm.queue, "broker", redis_broker)
    monkeypatch.setattr(send_campaign, "broker", redis_broker)
    monkeypatch.setattr(send_campaign, "queue_name", name)
    redis_broker.declare_actor(send_campaign)
    try:
        yield Queue(redis_broker, name)
    finally:
        redis_broker.flush(name)
        redis_broker.close()


# --- factories ------------------------------------------------------------------------------


def make_list(name: str = "Newsletter") -> MailingList:
    purpose = make_purpose(f"{name} purpose {uuid.uuid4().hex[:6]}")
    mlist = mailing.create_list(mailing.ListSpec(name=name, purpose_id=purpose.id), None)
    db.session.commit()
    return mlist


def subscribed_clients(mlist: MailingList, n: int, **values: Any) -> list[Any]:
    """n clients with a confirmed subscription (and consent) to the list."""
    clients = []
    for i in range(n):
        client = make_client(
            first_name=values.get("first_name", "Zofia"),
            last_name=values.get("last_name", f"Wiśniewska{i}"),
            email=f"client{i}.{uuid.uuid4().hex[:6]}@example.pl",
        )
        mailing.subscribe(client, db.session.get(MailingList, mlist.id))
        db.session.commit()
        clients.append(client)
    return clients


def make_campaign(list_ids: list[int], **values: Any) -> Campaign:
    values.setdefault("subject", "Nowości z Łodzi dla {{ first_name }}")
    values.setdefault("sender_email", "biuro@example.pl")
    values.setdefault("sender_name", "Salon Łódź")
    values.setdefault("body", "# Dzień dobry {{ first_name }} {{ last_name }}!\n\nZapraszamy.")
    spec = services.CampaignSpec(list_ids=list_ids, **values)
    campaign = services.create_campaign(spec, _admin())
    db.session.commit()
    return campaign


def _admin():  # type: ignore[no-untyped-def]
    from crm.auth.models import User

    user = db.session.query(User).filter_by(email="sender@example.com").one_or_none()
    return user or make_user("sender@example.com", name="Sam Sender")
