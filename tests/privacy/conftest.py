"""Fixtures for the privacy tests, and a factory other tests may import."""

from __future__ import annotations

from datetime import date
from typing import Any

from crm.extensions import db
from crm.privacy.models import DataRequest, RequestChannel, RequestKind, RequestStatus
from crm.privacy.services import due_date


def make_request(
    kind: RequestKind | str = RequestKind.ACCESS,
    *,
    client: Any = None,
    received_on: date | None = None,
    **values: Any,
) -> DataRequest:
    """An open request straight through the model, committed; the due date follows the
    received date (default: 1 March 2030) unless given. Pass `client` (a Client) to
    link it; any other column as a keyword."""
    received = received_on or date(2030, 3, 1)
    values.setdefault("status", RequestStatus.OPEN.value)
    values.setdefault("channel", RequestChannel.EMAIL.value)
    values.setdefault("requester", client.display_name if client is not None else "Jan Kowalski")
    values.setdefault("due_on", due_date(received))
    values.setdefault("details", "")
    values.setdefault("identity_check", "")
    values.setdefault("extension_reason", "")
    values.setdefault("outcome", "")
    if client is not None:
        values.setdefault("client_id", client.id)
        values.setdefault("subject_ref", client.id)
    data_request = DataRequest(kind=RequestKind(kind).value, received_on=received, **values)
    db.session.add(data_request)
    db.session.commit()
    return data_request
