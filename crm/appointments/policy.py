"""Which appointments a user may reach: those of the clients they may see
(crm.clients.policy). In the calendar, appointments of other clients still take their
time but show as "Booked", without the client's name."""

from __future__ import annotations

from flask import abort
from sqlalchemy import select

from crm.appointments.models import Appointment
from crm.appointments.services import appointment_query
from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.extensions import db


def get_appointment_or_404(user: User, appointment_id: int) -> Appointment:
    """The appointment, or 404 when it does not exist or its client lies outside the
    user's scope (404, not 403, so ids cannot be probed)."""
    appointment = db.session.scalar(
        appointment_query()
        .join(Client, Client.id == Appointment.client_id)
        .where(Appointment.id == appointment_id, visible_clients(user))
    )
    if appointment is None:
        abort(404)
    return appointment


def visible_client_ids(user: User, client_ids: set[int]) -> set[int]:
    """Which of these clients the user may see: one query for a whole calendar page."""
    if not client_ids:
        return set()
    return set(
        db.session.scalars(
            select(Client.id).where(Client.id.in_(client_ids), visible_clients(user))
        )
    )
