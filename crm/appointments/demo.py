"""Demo data for the appointment book: two services, working hours for the staff, a
weekly team meeting and a filled calendar for the current week."""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from crm.appointments import services
from crm.appointments.models import Appointment, AppointmentStatus, BlockKind, Service
from crm.appointments.services import ServiceSpec
from crm.appointments.slots import ServiceRule, free_slots, load_schedules
from crm.auth.models import User
from crm.clients.models import Client
from crm.extensions import db
from crm.sqltypes import utcnow

DEMO_STAFF = 3


def fill_demo_appointments(rng: random.Random, client_ids: list[int]) -> dict[str, int]:
    """Once per database: skipped when services exist already."""
    if not client_ids or db.session.scalar(select(func.count()).select_from(Service)):
        return {}
    staff = list(
        db.session.scalars(
            select(User).where(User.active.is_(True)).order_by(User.id).limit(DEMO_STAFF)
        )
    )
    if not staff:
        return {}
    ids = [u.id for u in staff]
    visit = services.save_service(
        ServiceSpec(
            name="Konsultacja",
            description="Rozmowa wstępna i plan działania.",
            duration_minutes=60,
            buffer_before_minutes=0,
            buffer_after_minutes=15,
            price=Decimal("200.00"),
            capacity=1,
            location="ul. Piotrkowska 104, 90-926 Łódź",
            online_url="",
            min_notice_hours=12,
            max_days_ahead=60,
            required_data=["name", "email", "phone"],
            staff_ids=ids,
        )
    )
    workshop = services.save_service(
        ServiceSpec(
            name="Warsztaty grupowe",
            description="Praktyczne warsztaty w małej grupie.",
            duration_minutes=120,
            buffer_before_minutes=15,
            buffer_after_minutes=15,
            price=Decimal("350.00"),
            capacity=8,
            location="Sala Müller, 1. piętro",
            online_url="",
            min_notice_hours=24,
            max_days_ahead=90,
            required_data=["name", "email"],
            staff_ids=ids[:1],
        )
    )
    for user_id in ids:
        if not any(services.weekly_hours(user_id).values()):
            services.set_weekly_hours(
                user_id, {d: [(time(9), time(13)), (time(13, 30), time(17))] for d in range(5)}
            )
    services.add_block(
        None,
        BlockKind.WEEKLY,
        weekday=0,
        start_time=time(9),
        end_time=time(10),
        note="Zebranie zespołu",
    )
    db.session.flush()

    zone = services.org_zone()
    today = services.local_today()
    monday = today - timedelta(days=today.weekday())
    friday = monday + timedelta(days=4)
    now = utcnow()
    week_start = services.day_bounds(monday, monday)[0]
    count = 0
    rule = ServiceRule.of(visit)
    schedules = load_schedules(ids, monday, friday, zone)
    for user_id in ids:
        taken_until = datetime.min.replace(tzinfo=UTC)
        for slot in free_slots(
            rule, [schedules[user_id]], monday, friday, zone, week_start, honour_window=False
        ):
            # About six in ten of the hours booked, never overlapping (buffer included).
            if slot.starts_at < taken_until or rng.random() > 0.35:
                continue
            past = slot.ends_at < now
            status = (
                rng.choice([AppointmentStatus.DONE] * 5 + [AppointmentStatus.NO_SHOW])
                if past
                else rng.choice([AppointmentStatus.BOOKED, AppointmentStatus.CONFIRMED])
            )
            db.session.add(
                Appointment(
                    service_id=visit.id,
                    staff_id=user_id,
                    client_id=rng.choice(client_ids),
                    starts_at=slot.starts_at,
                    ends_at=slot.ends_at,
                    buffer_after_minutes=visit.buffer_after_minutes,
                    status=status.value,
                    public_token=secrets.token_urlsafe(32),
                )
            )
            taken_until = slot.ends_at + timedelta(minutes=visit.buffer_after_minutes)
            count += 1
    db.session.flush()
    # One workshop session on Thursday afternoon with five seats taken, if still free.
    thursday = monday + timedelta(days=3)
    session = next(
        (
            s
            for s in services.slots_for(
                workshop, thursday, thursday, honour_window=False, now=week_start
            )
            if s.starts_at.astimezone(zone).hour >= 14
        ),
        None,
    )
    if session is not None:
        for client_id in rng.sample(client_ids, min(5, len(client_ids))):
            db.session.add(
                Appointment(
                    service_id=workshop.id,
                    staff_id=session.staff_id,
                    client_id=client_id,
                    starts_at=session.starts_at,
                    ends_at=session.ends_at,
                    buffer_before_minutes=workshop.buffer_before_minutes,
                    buffer_after_minutes=workshop.buffer_after_minutes,
                    status=AppointmentStatus.BOOKED.value,
                    public_token=secrets.token_urlsafe(32),
                )
            )
            count += 1
    db.session.flush()
    # Day-before reminders for what is still ahead (no confirmations: these were
    # "booked" before the demo began), and a few clients who stopped SMS.
    from crm.appointments.reminders import schedule_reminders

    upcoming = db.session.scalars(
        select(Appointment).where(
            Appointment.starts_at > now, Appointment.status != AppointmentStatus.CANCELLED.value
        )
    ).all()
    for client in db.session.scalars(
        select(Client).where(Client.id.in_(rng.sample(client_ids, max(1, len(client_ids) // 20))))
    ):
        client.sms_opt_out_at = now
    for appointment in upcoming:
        schedule_reminders(appointment, now, confirm=False)
    db.session.flush()
    return {"services": 2, "appointments": count, "reminders planned": len(upcoming)}
