"""Rows for the appointment tests, straight through the services."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm.appointments import services
from crm.appointments.services import ServiceSpec
from crm.extensions import db

WARSAW = ZoneInfo("Europe/Warsaw")


def admin_id(email: str = "admin@example.com") -> int:
    from sqlalchemy import select

    from crm.auth.models import User

    return db.session.scalar(select(User.id).where(User.email == email))  # type: ignore[return-value]


def make_service(staff_ids: list[int], **values: Any):  # type: ignore[no-untyped-def]
    spec = dict(
        name="Konsultacja",
        description="",
        duration_minutes=60,
        buffer_before_minutes=0,
        buffer_after_minutes=0,
        price=None,
        capacity=1,
        location="ul. Piotrkowska 1, Łódź",
        online_url="",
        min_notice_hours=0,
        max_days_ahead=365,
        required_data=["name", "email"],
        staff_ids=staff_ids,
    )
    spec.update(values)
    service = services.save_service(ServiceSpec(**spec))
    db.session.commit()
    return service


def every_day(user_id: int, start: time = time(9), end: time = time(17)) -> None:
    services.set_weekly_hours(user_id, {d: [(start, end)] for d in range(7)})
    db.session.commit()


def next_week() -> date:
    """A date a week from today in the organisation's zone (Europe/Warsaw in tests)."""
    return datetime.now(WARSAW).date() + timedelta(days=7)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=WARSAW)
