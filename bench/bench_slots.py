"""Slot engine benchmark: free slots of one service for 20 staff members over 60 days,
with about 60% of the working time already booked.

Figures: the whole computation (services.slots_for: one query per table for all staff,
then the interval arithmetic in Python), the loading alone, the Python part alone on
preloaded schedules, how many full garbage collections fell into the timed calls and
what they cost, and a baseline: the bare SQL query that loads the same appointments, on the same
connection.

    .venv/bin/python -m bench.bench_slots --backend sqlite
    .venv/bin/python -m bench.bench_slots --backend postgresql
"""

from __future__ import annotations

import argparse
import gc
import random
from datetime import UTC, datetime, time, timedelta
from time import perf_counter

from flask_migrate import upgrade
from sqlalchemy import insert, select, text

from bench import common
from bench.common import Row
from crm import settle_heap
from crm.appointments import services
from crm.appointments.models import Appointment, Service, WorkingHours
from crm.appointments.services import ServiceSpec
from crm.appointments.slots import ServiceRule, free_slots, load_schedules
from crm.auth.models import Role, User
from crm.clients.models import Client
from crm.extensions import db

BUDGET_MS = 100.0
STAFF = 20
DAYS = 60
BOOKED_SHARE = 0.6


class FullCollections:
    """Counts and times the garbage collector's full (generation 2) collections while
    measuring. Their cost grows with everything the process holds, not with the slot
    engine, and one lands every few calls: they are what the p95 shows."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = perf_counter()
        else:
            self.pauses.append((perf_counter() - self._started) * 1000)

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def note(self, calls: int) -> str:
        if not self.pauses:
            return f"no full garbage collection in {calls} calls of slots_for"
        mean = sum(self.pauses) / len(self.pauses)
        return (
            f"{len(self.pauses)} full garbage collections in {calls} calls of slots_for,"
            f" {mean:.1f} ms each on average ({len(gc.get_objects())} objects tracked)"
        )


def generate(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    common.create_admin()
    role_id = db.session.scalar(select(Role.id).where(Role.name == "sales"))
    db.session.execute(
        insert(User),
        [
            {
                "email": f"staff{n}@example.com",
                "full_name": f"Staff Łódź {n}",
                "password_hash": "!",  # cannot sign in
                "role_id": role_id,
                "session_token": f"bench-staff-{n}",
                "preferences": {},
            }
            for n in range(STAFF)
        ],
    )
    staff = list(db.session.scalars(select(User.id).where(User.email.like("staff%"))))
    db.session.execute(
        insert(Client),
        [
            {"first_name": "Zofia", "last_name": f"Wiśniewska {n}", "custom": {}, "search_text": ""}
            for n in range(500)
        ],
    )
    clients = list(db.session.scalars(select(Client.id)))
    service = services.save_service(
        ServiceSpec(
            name="Konsultacja",
            description="",
            duration_minutes=60,
            buffer_before_minutes=0,
            buffer_after_minutes=15,
            price=None,
            capacity=1,
            location="",
            online_url="",
            min_notice_hours=0,
            max_days_ahead=DAYS + 1,
            required_data=["name"],
            staff_ids=staff,
        )
    )
    hours = []
    for user_id in staff:
        for weekday in range(5):
            hours.append((user_id, weekday, time(9), time(13)))
            hours.append((user_id, weekday, time(13, 30), time(17)))
    db.session.execute(
        insert(WorkingHours),
        [{"user_id": u, "weekday": d, "start_time": s, "end_time": e} for u, d, s, e in hours],
    )
    # Appointments back to back (60 + 15 minutes) through each working interval, each
    # kept with probability BOOKED_SHARE: about 60% of the working time is taken.
    zone = services.org_zone()
    today = services.local_today()
    rows = []
    for user_id in staff:
        for offset in range(DAYS):
            day = today + timedelta(days=offset)
            if day.weekday() >= 5:
                continue
            for start, end in ((time(9), time(13)), (time(13, 30), time(17))):
                at = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
                stop = datetime.combine(day, end, tzinfo=zone).astimezone(UTC)
                while at + timedelta(minutes=60) <= stop:
                    if rng.random() < BOOKED_SHARE:
                        rows.append(
                            {
                                "service_id": service.id,
                                "staff_id": user_id,
                                "client_id": rng.choice(clients),
                                "starts_at": at,
                                "ends_at": at + timedelta(minutes=60),
                                "buffer_before_minutes": 0,
                                "buffer_after_minutes": 15,
                                "status": "booked",
                                "source": "staff",
                                "notes": "",
                            }
                        )
                    at += timedelta(minutes=75)
    db.session.execute(insert(Appointment), rows)
    db.session.commit()
    return {"appointments": len(rows)}


def run(backend: str, runs: int, seed: int, drop: bool) -> list[Row]:
    url = common.database_url(backend, "slots")
    common.create_database(url)
    app = common.make_app(url)
    rows: list[Row] = []
    with app.test_request_context():
        upgrade()
        figures = generate(seed)
        common.analyze(db.engine)
        service = db.session.scalar(select(Service))
        assert service is not None
        staff = [u.id for u in service.staff]
        start = services.local_today()
        end = start + timedelta(days=DAYS - 1)
        zone = services.org_zone()
        now = datetime.now(UTC)
        found = services.slots_for(service, start, end, now=now)
        # As `flask serve` does once set up (crm.settle_heap): the start-up heap is left
        # out of full garbage collections.
        settle_heap()
        with FullCollections() as collections:
            full = common.measure(lambda: services.slots_for(service, start, end, now=now), runs)
        load = common.measure(lambda: load_schedules(staff, start, end, zone), runs)
        schedules = load_schedules(staff, start, end, zone)
        rule = ServiceRule.of(service)
        compute = common.measure(
            lambda: free_slots(rule, schedules.values(), start, end, zone, now), runs
        )
        begin, finish = services.day_bounds(start, end)
        ids = ",".join(str(i) for i in staff)
        sql = text(
            "SELECT id, staff_id, service_id, starts_at, ends_at, buffer_before_minutes,"
            " buffer_after_minutes FROM appointments"
            f" WHERE staff_id IN ({ids}) AND status IN ('booked', 'confirmed', 'done', 'no_show')"
            " AND starts_at < :finish AND ends_at > :begin"
        )
        params = {
            "begin": begin.replace(tzinfo=None) - timedelta(hours=12),
            "finish": finish.replace(tzinfo=None) + timedelta(hours=12),
        }
        connection = db.session.connection()
        base = common.measure(lambda: connection.execute(sql, params).all(), runs)
        size = figures["appointments"]
        extra = {"slots": len(found)}
        shape = f"{STAFF} staff x {DAYS} days"
        rows.append(
            Row(
                shape,
                "slots",
                size,
                backend,
                "slots_for (load + compute)",
                full.median,
                full.p95,
                base.median,
                base.p95,
                BUDGET_MS,
                extra,
            )
        )
        rows.append(
            Row(
                shape,
                "slots",
                size,
                backend,
                "load only (load_schedules)",
                load.median,
                load.p95,
                base.median,
                base.p95,
                None,
                extra,
            )
        )
        rows.append(
            Row(
                shape,
                "slots",
                size,
                backend,
                "compute only (preloaded)",
                compute.median,
                compute.p95,
                base.median,
                base.p95,
                None,
                extra,
            )
        )
        db.session.rollback()
    with app.app_context():
        db.engine.dispose()
    if drop:
        common.drop_database(url)
    print(f"{size} appointments, {len(found)} free slots found")
    print(collections.note(runs + common.WARMUP))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = run(args.backend, args.runs, args.seed, args.drop)
    common.print_table(rows)
    print(common.load_note())
    if args.json_out:
        common.write_json(args.json_out, rows, {"bench": "slots", "runs": args.runs})


if __name__ == "__main__":
    main()
