"""The one gate for using a client's data: `may_contact(client, purpose, channel)`.

Every sending code (campaigns, reminders, renewal of anything but the consent itself)
asks it at send time, not when the message was planned: a consent withdrawn or expired
in between must stop the message. `contactable` is the same rule as a SQL condition on
clients, for resolving an audience in one query; both are built from
`crm.consents.services.is_valid` / `valid_condition`, so they cannot disagree.

The rule: the client's processing is not restricted (GDPR Art. 18: kept, not used),
the purpose exists and is not archived, it covers the channel, and the client's state
for it is "given" and not past its expiry at `now`. For bases other than
consent, "given" records that the basis applies (e.g. a contract was concluded) and a
withdrawal records its end or an objection.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, false, select

from crm.clients.models import Client
from crm.consents.models import Channel, ConsentPurpose, ConsentState
from crm.consents.services import find_purpose, is_valid, now_utc, valid_condition
from crm.extensions import db


def may_contact(
    client: Client | int,
    purpose: ConsentPurpose | int | str,
    channel: Channel | str,
    *,
    now: datetime | None = None,
) -> bool:
    """Whether `client`'s data may be used for `purpose` over `channel` at `now`.
    `purpose` is a purpose, its id or its key (e.g. "newsletter")."""
    now = now_utc(now)
    found = find_purpose(purpose)
    if found is None or found.is_archived:
        return False
    try:
        wanted = Channel(channel).value
    except ValueError:
        return False
    if wanted not in (found.channels or []):
        return False
    client_id = client.id if isinstance(client, Client) else int(client)
    # The restriction is read with the state (one query), not from `client`, which
    # may be an object loaded before the restriction was set.
    row = db.session.execute(
        select(ConsentState.status, ConsentState.expires_at, Client.restricted_at)
        .join(Client, Client.id == ConsentState.client_id)
        .where(ConsentState.client_id == client_id, ConsentState.purpose_id == found.id)
    ).first()
    return (
        row is not None and row.restricted_at is None and is_valid(row.status, row.expires_at, now)
    )


def contactable(
    purpose: ConsentPurpose | int | str, channel: Channel | str, *, now: datetime | None = None
) -> ColumnElement[bool]:
    """`may_contact` as a condition on Client, e.g.
    `select(Client).where(contactable("newsletter", "email"))`."""
    now = now_utc(now)
    found = find_purpose(purpose)
    try:
        wanted = Channel(channel).value
    except ValueError:
        return false()
    if found is None or found.is_archived or wanted not in (found.channels or []):
        return false()
    return and_(
        Client.restricted_at.is_(None),
        exists().where(
            ConsentState.client_id == Client.id,
            ConsentState.purpose_id == found.id,
            valid_condition(now),
        ),
    )
