from __future__ import annotations

from sqlalchemy import select

from crm.deals.models import Deal
from crm.extensions import db


def client_deals(client_id: int) -> list[Deal]:
    stmt = select(Deal).where(Deal.client_id == client_id).order_by(Deal.created_at.desc())
    return list(db.session.scalars(stmt))
