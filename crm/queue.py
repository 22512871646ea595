"""Dramatiq set-up: broker choice, app context for actors, dispatch after commit.

- no CRM_BROKER_URL: an in-memory broker whose workers run as threads inside the web
  process (the embedded default);
- redis://... or amqp://...: a real broker; `dramatiq crm.queue` runs worker processes.

Messages are nudges, never the only record of work: actors take ids, look their rows
up, and do nothing when the work is already done, so a redelivery is harmless.
`enqueue_after_commit` holds messages until the database transaction that created
their rows has committed, so an actor always finds what it was sent for.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from sqlalchemy import event
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from flask import Flask

_state: dict[str, Any] = {"app": None, "worker": None}
_lock = threading.Lock()


def make_broker(url: str | None) -> dramatiq.Broker:
    if not url:
        return StubBroker()
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    raise RuntimeError(f"CRM_BROKER_URL must be redis:// or amqp://, got {url!r}")


class AppContextMiddleware(Middleware):
    """Runs every actor inside a Flask app context (and cleans the DB session up)."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # `dramatiq crm.queue` imports this module alone. Building the app now (its
        # init_app imports every tasks module) declares the actors before the worker
        # starts, so the worker process consumes their queues.
        if _state["app"] is None:
            from crm import create_app, settle_heap

            with _lock:
                if _state["app"] is None:
                    _state["app"] = create_app()
                    settle_heap()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        app = _state["app"]
        if app is None:  # a `dramatiq crm.queue` worker process: build the app once
            from crm import create_app

            with _lock:
                if _state["app"] is None:
                    _state["app"] = create_app()
            app = _state["app"]
        ctx = app.app_context()
        ctx.push()
        message.options["_crm_ctx"] = ctx

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        ctx = message.options.pop("_crm_ctx", None)
        if ctx is not None:
            from crm.extensions import db

            db.session.remove()
            ctx.pop()

    after_skip_message = after_process_message


def setup_broker(url: str | None) -> dramatiq.Broker:
    broker = make_broker(url)
    broker.add_middleware(AppContextMiddleware())
    dramatiq.set_broker(broker)
    return broker


# The broker must exist before any actor is declared; the URL comes from the environment
# so that `dramatiq crm.queue` worker processes pick the same broker as the web app.
broker = setup_broker(os.environ.get("CRM_BROKER_URL") or None)


def actor(fn: Any = None, **options: Any) -> Any:
    """dramatiq.actor bound to this module's broker, whatever the import order.

    A bare @dramatiq.actor binds to dramatiq's global default broker at declaration
    time, which may be created before ours (and would be RabbitMQ)."""
    if fn is None:
        return lambda f: dramatiq.actor(f, broker=broker, **options)
    return dramatiq.actor(fn, broker=broker, **options)


def init_app(app: Flask) -> None:
    _state["app"] = app
    app.extensions["crm_broker"] = broker
    import_actors()


def import_actors() -> None:
    """Import every domain's tasks module so its actors are declared on the broker."""
    import crm.appointments.tasks
    import crm.booking.services
    import crm.campaigns.tasks
    import crm.mail
    import crm.mailing.tasks
    import crm.privacy.tasks
    import crm.tasks.tasks  # noqa: F401


def start_embedded_workers(app: Flask, threads: int = 2) -> dramatiq.Worker | None:
    """Embedded mode only: run workers as threads of this process."""
    if not isinstance(broker, StubBroker) or not app.config.get("CRM_EMBEDDED_WORKERS", True):
        return None
    with _lock:
        if _state["worker"] is None:
            worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
            worker.start()
            _state["worker"] = worker
    return _state["worker"]


# --- dispatch after commit -------------------------------------------------------------

_PENDING = "crm_pending_messages"


def enqueue_after_commit(actor: dramatiq.Actor[Any, Any], *args: Any, **kwargs: Any) -> None:
    """Send actor(*args) once the current transaction commits; drop it on rollback."""
    from crm.extensions import db

    # Begin the transaction now, so that a rollback before any write still drops it.
    db.session.connection()
    db.session.info.setdefault(_PENDING, []).append(actor.message(*args, **kwargs))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    for message in session.info.pop(_PENDING, []):
        broker.enqueue(message)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: Any) -> None:
    # Any rollback drops what was waiting: a message must never announce rows that were
    # not committed. Dropping too much is safe, since the database is the record of
    # pending work and the reconcile jobs re-enqueue it.
    session.info.pop(_PENDING, None)
