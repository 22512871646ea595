"""Pagination for the short lists (tasks, deals, fields). The client list uses keyset
pagination instead (crm/clients/listing.py) so that page 2000 costs what page 1 does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import request
from sqlalchemy import Select, func, select

from crm.extensions import db


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def page_number(arg: str = "page") -> int:
    try:
        return max(1, int(request.args.get(arg, "1")))
    except ValueError:
        return 1


def paginate(stmt: Select[Any], page: int, per_page: int = 50) -> Page:
    total = db.session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    items = list(db.session.scalars(stmt.limit(per_page).offset((page - 1) * per_page)))
    return Page(items=items, page=page, per_page=per_page, total=total or 0)
