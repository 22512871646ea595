"""Reliability: separate `dramatiq crm.queue` worker processes on Redis, an SMTP server
that fails 20% of transactions with 451, and a worker killed with SIGKILL twice in the
middle of a campaign. At the end every recipient was marked sent exactly once, got the
message at least once (at most one batch twice per kill), and nothing went to an
unsubscribed or suppressed address."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

import crm.queue
from crm.campaigns import services
from crm.campaigns.models import Campaign, Delivery, SentMessage
from crm.campaigns.tasks import send_campaign
from crm.clients.models import Client
from crm.config import normalise_database_url
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import MailingList
from tests.campaigns.smtp_server import SMTPTestServer
from tests.conftest import BACKENDS, PG_URL, make_test_app

REDIS_URL = os.environ.get("CRM_TEST_REDIS_URL")
ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = 300
BATCH = 20
RATE = 60  # messages per second over both workers: the campaign lasts several seconds

pytestmark = pytest.mark.skipif(
    not REDIS_URL, reason="needs a Redis broker for worker processes: set CRM_TEST_REDIS_URL"
)


@pytest.fixture(params=BACKENDS)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own, committed to by several processes (not the rolled-back
    test transaction of the other tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reliability.sqlite3'}"
        return
    admin_url = normalise_database_url(PG_URL or "")
    name = f"crm_rel_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "dramatiq", "crm.queue", "--processes", "1", "--threads", "1"]
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole worker (the dramatiq parent and its worker process)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_killed_workers_lose_no_recipient(fresh_database: str, tmp_path: Path, monkeypatch):
    server = SMTPTestServer(fail_share=0.2).start()
    settings = {
        "CRM_SMTP_URL": server.url,
        "CRM_BROKER_URL": REDIS_URL,
        "CRM_BASE_URL": "https://crm.example.com",
        # The reconcile job runs here, in the test: claims of a killed worker come back
        # after a few seconds, and a campaign without progress is re-enqueued soon.
        "CRM_CAMPAIGN_CLAIM_TIMEOUT": 4,
        "CRM_CAMPAIGN_STALL_SECONDS": 2,
    }
    previous_app = crm.queue._state["app"]
    app = make_test_app(fresh_database, tmp_path, **settings)
    redis_broker = crm.queue.make_broker(REDIS_URL)
    redis_broker.add_middleware(crm.queue.AppContextMiddleware())
    monkeypatch.setattr(crm.queue, "broker", redis_broker)
    monkeypatch.setattr(send_campaign, "broker", redis_broker)
    redis_broker.declare_actor(send_campaign)
    redis_broker.flush(send_campaign.queue_name)
    env = {
        **os.environ,
        "CRM_DATABASE_URL": fresh_database,
        "CRM_BROKER_URL": REDIS_URL or "",
        "CRM_SMTP_URL": server.url,
        "CRM_SECRET_KEY": "test-secret",
        "CRM_BASE_URL": "https://crm.example.com",
        "CRM_INSTANCE_PATH": str(tmp_path / "instance"),
        "CRM_EMBEDDED_WORKERS": "0",
        "CRM_CAMPAIGN_BATCH_SIZE": str(BATCH),
        "CRM_CAMPAIGN_RETRY_SECONDS": "0",
        "CRM_CAMPAIGN_MAX_ATTEMPTS": "100",
        "CRM_MAIL_RATE": str(RATE),
    }
    workers: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "workers.log"
    try:
        with app.app_context():
            upgrade()
            campaign_id, banned, expected = _prepare()
        workers = [_worker(env, log), _worker(env, log)]
        kills, deadline = 0, time.monotonic() + 50
        done = False
        while time.monotonic() < deadline:
            time.sleep(0.3)
            with app.app_context():
                services.reconcile()
                db.session.commit()
                stats = services.campaign_stats(campaign_id)
                done = db.session.get(Campaign, campaign_id).status == "done"
            if done:
                break
            if kills < 2 and stats.sent >= (kills + 1) * RECIPIENTS // 3:
                victim = workers.pop(0)
                _kill(victim)  # mid-batch: its claimed rows stay claimed
                kills += 1
                workers.append(_worker(env, log))
        assert done, f"campaign not done: {stats}\n{log.read_text()[-3000:]}"
        assert kills == 2

        with app.app_context():
            rows = db.session.execute(
                sa.select(Delivery.email, Delivery.status, Delivery.skip_reason).where(
                    Delivery.campaign_id == campaign_id
                )
            ).all()
            stored = Counter(
                db.session.scalars(
                    sa.select(SentMessage.email).where(SentMessage.campaign_id == campaign_id)
                )
            )
        sent = {r.email for r in rows if r.status == "sent"}
        assert sent == expected
        assert {r.email: r.skip_reason for r in rows if r.status != "sent"} == {
            banned["unsubscribed"]: "unsubscribed",
            banned["suppressed"]: "suppressed",
        }
        # Marked sent exactly once: one stored message per recipient.
        assert set(stored) == expected and set(stored.values()) == {1}
        received = Counter(server.recipients())
        assert set(received) == expected  # everyone, and no one else
        duplicates = sum(received.values()) - len(received)
        assert duplicates <= kills * BATCH
        assert server.handler.temporary_failures > 0
    finally:
        for process in workers:
            _kill(process)
        server.stop()
        redis_broker.flush(send_campaign.queue_name)
        redis_broker.close()
        crm.queue._state["app"] = previous_app
        with app.app_context():
            db.engine.dispose()


def _prepare() -> tuple[int, dict[str, str], set[str]]:
    """A list with RECIPIENTS subscribers and a campaign started to them; right after
    the start (same commit, so before any worker sees it) one recipient unsubscribes
    and one address is suppressed."""
    from tests.campaigns.conftest import make_campaign, make_list
    from tests.conftest import make_client

    mlist = make_list("Newsletter")
    live = db.session.get(MailingList, mlist.id)
    emails = []
    for i in range(RECIPIENTS):
        client = make_client(last_name=f"Dvořák{i}", email=f"r{i}@example.cz")
        mailing.subscribe(client, live)
        emails.append(client.email)
    db.session.commit()
    campaign = make_campaign([mlist.id])
    assert services.start_sending(campaign, campaign.created_by) == RECIPIENTS
    leaver, suppressed = emails[-1], emails[RECIPIENTS // 2]
    leaver_client = db.session.scalar(sa.select(Client).where(Client.email == leaver))
    mailing.unsubscribe(mailing.get_subscription(leaver_client.id, mlist.id))
    mailing.suppress(suppressed, "manual")
    db.session.commit()
    banned = {"unsubscribed": leaver, "suppressed": suppressed}
    return campaign.id, banned, set(emails) - set(banned.values())
