"""Which deals a user may reach: those of the clients they may see (crm.clients.policy)."""

from __future__ import annotations

from flask import abort
from sqlalchemy import Select, select
from sqlalchemy.orm import contains_eager, joinedload

from crm.auth.models import User
from crm.clients.policy import visible_clients
from crm.deals.models import Deal
from crm.extensions import db


def deal_query(user: User) -> Select[tuple[Deal]]:
    """Deals the user may see, with client, stage and owner loaded."""
    return (
        select(Deal)
        .join(Deal.client)
        .options(contains_eager(Deal.client), joinedload(Deal.owner))
        .where(visible_clients(user))
    )


def get_deal_or_404(user: User, deal_id: int) -> Deal:
    """The deal, or 404 when it does not exist or its client lies outside the user's scope."""
    deal = db.session.scalar(deal_query(user).where(Deal.id == deal_id))
    if deal is None:
        abort(404)
    return deal
