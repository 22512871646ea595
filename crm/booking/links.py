"""The client's manage link: view, cancel or move one online booking.

The link is the appointment's random `public_token`, signed (itsdangerous, the app
secret and a salt of its own) so a token from another feature never passes here. The
signature only proves we issued the string; the database decides which appointment it
names, so giving an appointment a new `public_token` voids every link sent before.
"""

from __future__ import annotations

import secrets

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import select

from crm.appointments.models import Appointment
from crm.extensions import db

MANAGE_SALT = "crm.booking.manage"
# A longer value cannot be one of ours; refuse it before any work.
MAX_TOKEN_LENGTH = 200


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt=MANAGE_SALT)


def ensure_public_token(appointment: Appointment) -> str:
    """The appointment's public token, made now if it has none (flushed, not committed)."""
    if not appointment.public_token:
        appointment.public_token = secrets.token_urlsafe(32)
        db.session.flush()
    return appointment.public_token


def manage_token(appointment: Appointment) -> str:
    return str(_serializer().dumps(ensure_public_token(appointment)))


def manage_url(appointment: Appointment) -> str:
    """The absolute manage link (on CRM_BASE_URL), also outside a request (workers)."""
    from crm.mailing.services import public_url

    return public_url("booking.manage", token=manage_token(appointment))


def load_manage_token(token: str) -> Appointment | None:
    """The appointment a manage link names; None when the token is tampered with,
    unknown, or was replaced by a newer one."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        public_token = _serializer().loads(token)
    except (BadData, UnicodeError, ValueError):
        return None
    if not isinstance(public_token, str) or not public_token:
        return None
    return db.session.scalar(select(Appointment).where(Appointment.public_token == public_token))
