"""Mailing actors: the double opt-in confirmation email; the periodic clean-up of
import files.

The message carries the subscription id and the nonce of the request; the actor looks
the row up and sends only while that request is still pending, so a redelivered or
outdated message sends nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from crm.clients.models import Client
from crm.extensions import db
from crm.mail import build_message, deliver
from crm.mailing import services
from crm.mailing.models import Subscription, SubscriptionStatus
from crm.queue import actor
from crm.scheduler import periodic


@actor(max_retries=5, min_backoff=10_000)
def send_confirmation(subscription_id: int, nonce: str) -> None:
    """Email the confirmation link of a pending double opt-in subscription."""
    sub = db.session.get(Subscription, subscription_id)
    if (
        sub is None
        or sub.status != SubscriptionStatus.UNCONFIRMED.value
        or sub.confirm_nonce != nonce
    ):
        return
    client = db.session.get(Client, sub.client_id)
    if client is None or not client.email or services.is_suppressed(client.email):
        return
    if client.restricted_at is not None:  # restricted since the request: never contacted
        return
    link = services.public_url("mailing.confirm", token=services.confirmation_token(sub))
    subject, body = services.confirmation_email(sub, client, link)
    deliver(build_message(client.email, subject, body))


@periodic("mailing.import_files", every=timedelta(hours=1))
def import_files_cleanup(now: datetime) -> dict[str, int]:
    """Remove CSV uploads and error reports of imports older than a day."""
    from crm.mailing.importer import remove_stale_import_files

    return {"removed": remove_stale_import_files(now)}
