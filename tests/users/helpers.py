"""Helpers for the user administration tests: delivering queued emails into the outbox
and reading the links out of them, audit entries, a user's stored state."""

from __future__ import annotations

import email
import re
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from flask import Flask
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.auth.models import User
from crm.auth.services import find_user
from crm.extensions import db
from crm.mail import send_email
from crm.queue import broker

LINK = re.compile(r"https?://\S+/(?:invite|password/reset)/[A-Za-z0-9_\-]+")


def require_stub_broker() -> None:
    if not isinstance(broker, StubBroker):
        pytest.skip("runs the queued emails from the in-memory broker (CRM_BROKER_URL is set)")
    broker.flush_all()


def deliver_queued(app: Flask) -> list[EmailMessage]:
    """Run the queued send_email messages as a worker would; return the new emails
    read back from the outbox directory."""
    folder = Path(app.config["CRM_OUTBOX_DIR"])
    before = set(folder.glob("*.eml")) if folder.exists() else set()
    queue = broker.queues.get("default")
    while queue is not None and not queue.empty():
        message = dramatiq.Message.decode(queue.get_nowait())
        queue.task_done()
        assert message.actor_name == send_email.actor_name
        with app.app_context():
            send_email.fn(*message.args, **message.kwargs)
    new = sorted((set(folder.glob("*.eml")) if folder.exists() else set()) - before)
    return [
        email.message_from_bytes(path.read_bytes(), policy=default_policy)  # type: ignore[misc]
        for path in new
    ]


def link_in(message: EmailMessage) -> str:
    """The path of the one account link in the email's text."""
    found = LINK.findall(message.get_content())
    assert len(found) == 1, message.get_content()
    return "/" + found[0].split("/", 3)[3]


def audit_entries(app: Flask, action: str) -> list[AuditEntry]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


def user_state(app: Flask, email_address: str) -> User:
    with app.app_context():
        user = find_user(email_address)
        assert user is not None
        db.session.expunge(user)
        return user
