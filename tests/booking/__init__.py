"""Helpers for the public booking tests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import dramatiq
from sqlalchemy import select

import crm.queue
from crm.appointments.models import Appointment
from crm.extensions import db

UA = "Mozilla/5.0 (Linux; Android 14) Testbrowser/1.0"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def details_url(service_id: int, start: datetime, staff: int | None = None) -> str:
    url = f"/book/{service_id}/details?start={iso(start).replace('+', '%2B')}"
    return url + (f"&staff={staff}" if staff else "")


def person(**extra: Any) -> dict[str, Any]:
    data = {"first_name": "Zofia", "last_name": "Wiśniewska", "email": "zofia@example.com"}
    data.update(extra)
    return data


def appointments(app) -> list[Appointment]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(db.session.scalars(select(Appointment).order_by(Appointment.id)))


def manage_path(response: Any) -> str:
    """The manage page a successful booking redirects to (path and query)."""
    assert response.status_code == 303, response.get_data(as_text=True)
    parts = urlsplit(response.headers["Location"])
    return parts.path + (f"?{parts.query}" if parts.query else "")


def pending_booking_emails() -> list[tuple[int, bytes]]:
    """The booking emails waiting in the in-memory broker, taken off the queue, as
    (client id, raw message)."""
    from crm.booking.services import send_booking_email

    queue = crm.queue.broker.queues.get(send_booking_email.queue_name)
    found = []
    kept = []
    while queue is not None and not queue.empty():
        message = dramatiq.Message.decode(queue.get_nowait())
        # The stub broker's join() counts unfinished items: a message taken off by hand
        # is marked done, or a later test joining this queue waits forever.
        queue.task_done()
        if message.actor_name == send_booking_email.actor_name:
            found.append((message.args[0], message.args[1]))
        else:
            kept.append(message)
    for message in kept:
        queue.put(message.encode())
    return [(client_id, base64.b64decode(raw)) for client_id, raw in found]


def run_booking_emails(app) -> int:  # type: ignore[no-untyped-def]
    """Run the pending booking-email actor messages now, as a worker would."""
    from crm.booking.services import send_booking_email

    pending = pending_booking_emails()
    for client_id, raw in pending:
        with app.app_context():
            send_booking_email.fn(client_id, base64.b64encode(raw).decode("ascii"))
    return len(pending)
