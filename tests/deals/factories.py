from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from crm.deals.models import Deal, DealStage
from crm.deals.services import create_deal
from crm.extensions import db


def stage(name: str) -> DealStage:
    """One of the stages the migration seeds (Lead ... Won, Lost)."""
    found = db.session.scalar(select(DealStage).where(DealStage.name == name))
    assert found is not None, name
    return found


def make_deal(
    title: str,
    client_id: int,
    stage_name: str = "Lead",
    amount: str | None = None,
    currency: str = "PLN",
    **values: Any,
) -> Deal:
    deal = create_deal(
        title=title,
        client_id=client_id,
        stage_id=stage(stage_name).id,
        currency=currency,
        amount=Decimal(amount) if amount is not None else None,
        **values,
    )
    db.session.commit()
    return deal
