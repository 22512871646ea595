"""Lists, groups and subscriptions for the mailing tests."""

from __future__ import annotations

from typing import Any

from crm.consents.models import ConsentPurpose
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import ListGroup, MailingList, OptIn
from tests.consents.factories import make_purpose


def make_group(name: str = "Newsletter") -> ListGroup:
    group = services.create_group(name, "", None)
    db.session.commit()
    return group


def make_list(
    name: str = "Newsletter PL",
    *,
    group: ListGroup | None = None,
    opt_in: OptIn = OptIn.SINGLE,
    purpose: ConsentPurpose | None = None,
    **kw: Any,
) -> MailingList:
    """A list through the service, committed; a purpose "Newsletter" is made if none."""
    if purpose is None:
        purpose = (
            db.session.scalar(db.select(ConsentPurpose).where(ConsentPurpose.key == "newsletter"))
            or make_purpose()
        )
    mlist = services.create_list(
        services.ListSpec(
            name=name,
            purpose_id=purpose.id,
            group_id=group.id if group else None,
            opt_in=opt_in,
            **kw,
        ),
        None,
    )
    db.session.commit()
    return mlist


def make_campaign_id() -> int:
    """A campaign row's id (the subscription events' campaign_id refers to one)."""
    table = db.metadata.tables.get("campaigns")
    if table is None:
        return 42
    result = db.session.execute(
        db.insert(table).values(subject="Nowości", sender_email="news@example.com")
    )
    db.session.commit()
    return int(result.inserted_primary_key[0])
