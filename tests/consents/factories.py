"""Purposes, events and a fixed clock for the consent tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq

from crm.consents import services
from crm.consents.models import ConsentEvent, ConsentPurpose, EventKind, LegalBasis, Method
from crm.consents.services import PurposeSpec
from crm.extensions import db

# A fixed start for every clock walk: the tests never depend on today's date.
T0 = datetime(2030, 1, 15, 9, 30, tzinfo=UTC)
NOTICE_EN = "We send you our newsletter about offers once a month. You can stop any time."


def make_purpose(
    name: str = "Newsletter",
    *,
    basis: LegalBasis = LegalBasis.CONSENT,
    notices: dict[str, str] | None = None,
    now: datetime = T0,
    **values: Any,
) -> ConsentPurpose:
    """A purpose through the service, committed (consent, 24 months, warn 30 days)."""
    values.setdefault("retention_months", 12)
    values.setdefault("channels", ["email"])
    values.setdefault("data_categories", "name, email address")
    if basis == LegalBasis.LEGITIMATE_INTEREST:
        values.setdefault("legitimate_interest", "Keeping customers informed")
    if basis != LegalBasis.CONSENT:
        values.setdefault("validity_months", None)
    spec = PurposeSpec(name=name, legal_basis=basis, **values)
    purpose = services.create_purpose(spec, notices or {"en": NOTICE_EN}, None, now=now)
    db.session.commit()
    return purpose


def give(
    client_id: int,
    purpose: ConsentPurpose,
    now: datetime = T0,
    kind: EventKind = EventKind.GIVEN,
    method: Method = Method.PHONE,
    **kw: Any,
) -> ConsentEvent:
    """Record an event (given by phone, by default) under the newest English notice."""
    if kind in (EventKind.GIVEN, EventKind.RENEWED, EventKind.REFUSED):
        kw.setdefault("notice", services.latest_notices(purpose.id)["en"])
    event = services.record_event(client_id, purpose, kind, method, now=now, **kw)
    db.session.commit()
    return event


def days(n: float) -> timedelta:
    return timedelta(days=n)


def queued(queue) -> list[dramatiq.Message]:  # type: ignore[no-untyped-def]
    """Take the waiting messages off the queue (marking each done)."""
    messages = []
    while not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get_nowait()))
        queue.task_done()
    return messages
