"""Deals and the stages of the pipeline. Services change state and flush; the caller
commits once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from flask_babel import gettext as _
from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import contains_eager, joinedload

from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.deals.models import Deal, DealStage, StageKind
from crm.deals.policy import deal_query
from crm.extensions import db
from crm.org.services import shared

BOARD_LIMIT = 25  # deals shown per stage column; the rest behind "show all"
DEAL_PAGE = 50
CENT = Decimal("0.01")


class StageError(ValueError):
    """Why a stage change was refused, for a person."""


# --- stages --------------------------------------------------------------------------------


def all_stages() -> list[DealStage]:
    return list(db.session.scalars(select(DealStage).order_by(DealStage.position, DealStage.id)))


def stage_list() -> list[DealStage]:
    """The stages in pipeline order, for reading: the process's shared copy
    (crm.org.services.shared). Change stages through all_stages()."""
    return shared(
        "deal_stages",
        lambda session: list(
            session.scalars(select(DealStage).order_by(DealStage.position, DealStage.id))
        ),
    )


def stage_usage() -> dict[int, int]:
    """Number of deals per stage id (all clients: a stage is shared by everyone)."""
    rows = db.session.execute(select(Deal.stage_id, func.count()).group_by(Deal.stage_id))
    return {stage_id: count for stage_id, count in rows}


def _clean_name(name: str) -> str:
    return " ".join(name.split())[:64]


def _check_name(name: str, stage: DealStage | None = None) -> str:
    name = _clean_name(name)
    if not name:
        raise StageError(_("Give the stage a name."))
    taken = db.session.scalar(select(DealStage).where(func.lower(DealStage.name) == name.lower()))
    if taken is not None and taken is not stage:
        raise StageError(_("A stage named “%(name)s” exists already.", name=taken.name))
    return name


def _check_open_stage_remains(stage: DealStage, new_kind: str | None) -> None:
    """The pipeline needs at least one open stage, or no deal could be in progress."""
    if stage.kind != StageKind.OPEN.value or new_kind == StageKind.OPEN.value:
        return
    others = db.session.scalar(
        select(func.count())
        .select_from(DealStage)
        .where(DealStage.kind == StageKind.OPEN.value, DealStage.id != stage.id)
    )
    if not others:
        raise StageError(_("The pipeline needs at least one open stage."))


def create_stage(name: str, kind: StageKind | str) -> DealStage:
    name = _check_name(name)
    last = db.session.scalar(select(func.max(DealStage.position))) or 0
    stage = DealStage(name=name, kind=StageKind(kind).value, position=last + 1)
    db.session.add(stage)
    db.session.flush()
    return stage


def update_stage(stage: DealStage, name: str, kind: StageKind | str) -> None:
    kind = StageKind(kind).value
    stage_name = _check_name(name, stage)
    _check_open_stage_remains(stage, kind)
    stage.name = stage_name
    stage.kind = kind
    db.session.flush()


def move_stage(stage: DealStage, direction: int) -> None:
    """Swap the stage with its neighbour (direction -1 up, +1 down); positions are
    renumbered 1..n on the way, so duplicates left by older data cannot stick."""
    stages = all_stages()
    index = stages.index(stage)
    other = index + (-1 if direction < 0 else 1)
    if 0 <= other < len(stages):
        stages[index], stages[other] = stages[other], stages[index]
    for position, item in enumerate(stages, start=1):
        item.position = position
    db.session.flush()


def delete_stage(stage: DealStage) -> None:
    used = db.session.scalar(
        select(func.count()).select_from(Deal).where(Deal.stage_id == stage.id)
    )
    if used:
        raise StageError(
            _(
                "“%(name)s” still holds %(count)s deal(s). Move them to another stage first, "
                "then delete it.",
                name=stage.name,
                count=used,
            )
        )
    _check_open_stage_remains(stage, None)
    db.session.delete(stage)
    db.session.flush()


# --- deals ---------------------------------------------------------------------------------


def client_deals(client_id: int) -> list[Deal]:
    """The client's deals: open ones first in pipeline order, then won and lost."""
    stmt = (
        select(Deal)
        .join(Deal.stage)
        .options(
            contains_eager(Deal.stage),
            joinedload(Deal.owner).load_only(*User.display_columns()),
        )
        .where(Deal.client_id == client_id)
        .order_by(
            case((DealStage.kind == StageKind.OPEN.value, 0), else_=1),
            DealStage.position,
            Deal.expected_close.is_(None),
            Deal.expected_close,
            Deal.id.desc(),
        )
    )
    return list(db.session.scalars(stmt))


def create_deal(
    *,
    title: str,
    client_id: int,
    stage_id: int,
    currency: str,
    amount: Decimal | None = None,
    expected_close: date | None = None,
    owner_id: int | None = None,
) -> Deal:
    deal = Deal(
        title=" ".join(title.split())[:200],
        client_id=client_id,
        stage_id=stage_id,
        currency=currency.upper(),
        amount=amount,
        expected_close=expected_close,
        owner_id=owner_id,
    )
    db.session.add(deal)
    db.session.flush()
    return deal


def update_deal(
    deal: Deal,
    *,
    title: str,
    stage_id: int,
    currency: str,
    amount: Decimal | None,
    expected_close: date | None,
    owner_id: int | None,
) -> None:
    deal.title = " ".join(title.split())[:200]
    deal.stage_id = stage_id
    deal.currency = currency.upper()
    deal.amount = amount
    deal.expected_close = expected_close
    deal.owner_id = owner_id
    db.session.flush()
    db.session.expire(deal, ["stage", "owner"])


def set_stage(deal: Deal, stage: DealStage) -> bool:
    if deal.stage_id == stage.id:
        return False
    deal.stage_id = stage.id
    deal.stage = stage
    db.session.flush()
    return True


def delete_deal(deal: Deal) -> None:
    db.session.delete(deal)
    db.session.flush()


# --- the pipeline --------------------------------------------------------------------------


@dataclass
class StageSummary:
    """One stage of the pipeline: how many deals, their value per currency, and (on the
    board) the first few of them."""

    stage: DealStage
    count: int = 0
    sums: dict[str, Decimal] = field(default_factory=dict)
    deals: list[Deal] = field(default_factory=list)

    @property
    def sorted_sums(self) -> list[tuple[str, Decimal]]:
        return sorted(self.sums.items())

    @property
    def more(self) -> int:
        return max(0, self.count - len(self.deals))


def _scoped(stmt: Select, user: User, owner_id: int | None) -> Select:  # type: ignore[type-arg]
    stmt = stmt.join(Client, Deal.client_id == Client.id).where(visible_clients(user))
    if owner_id is not None:
        stmt = stmt.where(Deal.owner_id == owner_id)
    return stmt


def stage_summaries(user: User, owner_id: int | None = None) -> list[StageSummary]:
    """Every stage in order, with the count and per-currency sums of the deals the user
    may see (one grouped query)."""
    summaries = {s.id: StageSummary(stage=s) for s in all_stages()}
    stmt = _scoped(
        select(Deal.stage_id, Deal.currency, func.count(), func.sum(Deal.amount)),
        user,
        owner_id,
    ).group_by(Deal.stage_id, Deal.currency)
    for stage_id, currency, count, total in db.session.execute(stmt):
        summary = summaries.get(stage_id)
        if summary is None:
            continue
        summary.count += count
        if total is not None:
            summary.sums[currency] = Decimal(str(total)).quantize(CENT)
    return list(summaries.values())


def stage_deals_query(user: User, stage_id: int, owner_id: int | None = None) -> Select:  # type: ignore[type-arg]
    """The deals of one stage: soonest expected close first, undated last."""
    stmt = deal_query(user).where(Deal.stage_id == stage_id)
    if owner_id is not None:
        stmt = stmt.where(Deal.owner_id == owner_id)
    return stmt.order_by(Deal.expected_close.is_(None), Deal.expected_close, Deal.id)


def board(user: User, owner_id: int | None = None) -> tuple[list[StageSummary], list[StageSummary]]:
    """(open stages with their first deals, won and lost stages with totals only)."""
    summaries = stage_summaries(user, owner_id)
    open_stages = [s for s in summaries if s.stage.kind == StageKind.OPEN.value]
    closed = [s for s in summaries if s.stage.kind != StageKind.OPEN.value]
    for summary in open_stages:
        if summary.count:
            stmt = stage_deals_query(user, summary.stage.id, owner_id).limit(BOARD_LIMIT)
            summary.deals = list(db.session.scalars(stmt))
    return open_stages, closed


def totals(summaries: list[StageSummary]) -> list[tuple[str, Decimal]]:
    """Per-currency sums across several stages."""
    combined: dict[str, Decimal] = defaultdict(Decimal)
    for summary in summaries:
        for currency, amount in summary.sums.items():
            combined[currency] += amount
    return sorted(combined.items())
