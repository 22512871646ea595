"""Reminder sweep benchmark: 100k upcoming appointments, each with a day-before SMS and
email reminder (200k rows), on one service.

Figures, each run on the same data put back between runs (untimed):
- backlog: every SMS reminder due at once (100k rows; after an outage, or a day's
  worth): the periodic job's part, `sweep(now)` + commit, which claims them in
  batches of 500 and enqueues one message per batch (to the in-memory broker, no
  worker: sending is not in this figure);
- steady state: the 1% of rows due in this minute among the 200k;
- sending, stubbed: one batch of 500 claimed reminders through the actor's function
  to the file outbox (per-row checks, the SMS text, one commit per row);
- baseline: the bare SQL claim (one UPDATE ... WHERE status = 'scheduled' AND due_at
  <= now) of the same rows, on the same connection.

    .venv/bin/python -m bench.bench_reminders --backend sqlite
    .venv/bin/python -m bench.bench_reminders --backend postgresql
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from time import perf_counter

import sqlalchemy as sa
from flask_migrate import upgrade
from sqlalchemy import insert, select, text

from bench import common
from bench.common import Row
from crm.appointments import services
from crm.appointments.models import Appointment, Reminder
from crm.appointments.services import ServiceSpec
from crm.clients.models import Client
from crm.consents.models import ConsentState
from crm.extensions import db

BUDGET_MS = 5000.0
APPOINTMENTS = 100_000
BATCH = 5000
SEND_BATCH = 500


def generate(seed: int, size: int, now: datetime) -> dict[str, int]:
    """Clients, appointments over the next 60 days and their reminder rows, bulk
    inserted; the reminders purpose with a valid state for every client."""
    from crm.appointments.reminders import reminders_purpose

    rng = random.Random(seed)
    staff = common.create_admin()
    service = services.save_service(
        ServiceSpec(
            name="Konsultacja",
            description="",
            duration_minutes=30,
            buffer_before_minutes=0,
            buffer_after_minutes=0,
            price=None,
            capacity=1_000_000,  # seats: the rows need not avoid each other here
            location="ul. Piotrkowska 104, Łódź",
            online_url="",
            min_notice_hours=0,
            max_days_ahead=365,
            required_data=["name"],
            staff_ids=[staff],
        )
    )
    purpose = reminders_purpose()
    db.session.commit()
    for start in range(0, size, BATCH):
        count = min(BATCH, size - start)
        db.session.execute(
            insert(Client.__table__),
            [
                {
                    "first_name": "Zofia",
                    "last_name": f"Wiśniewska {n}",
                    "email": f"z{n}@example.com",
                    "phone": f"+48601{n % 1_000_000:06d}",
                    "custom": {},
                    "search_text": "",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(start, start + count)
            ],
        )
    clients = list(db.session.scalars(select(Client.id).order_by(Client.id)))
    for start in range(0, size, BATCH):
        db.session.execute(
            insert(ConsentState.__table__),
            [
                {
                    "client_id": cid,
                    "purpose_id": purpose.id,
                    "status": "given",
                    "since": now,
                    "updated_at": now,
                }
                for cid in clients[start : start + BATCH]
            ],
        )
    for start in range(0, size, BATCH):
        rows = []
        for cid in clients[start : start + BATCH]:
            at = now + timedelta(days=2, minutes=rng.randrange(60 * 24 * 58))
            at = at.replace(second=0, microsecond=0)
            rows.append(
                {
                    "service_id": service.id,
                    "staff_id": staff,
                    "client_id": cid,
                    "starts_at": at,
                    "ends_at": at + timedelta(minutes=30),
                    "buffer_before_minutes": 0,
                    "buffer_after_minutes": 0,
                    "status": "booked",
                    "source": "staff",
                    "notes": "",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        db.session.execute(insert(Appointment.__table__), rows)
    appointments = db.session.execute(
        select(Appointment.id, Appointment.starts_at).order_by(Appointment.id)
    ).all()
    for start in range(0, size, BATCH):
        rows = []
        for aid, starts_at in appointments[start : start + BATCH]:
            due = starts_at - timedelta(days=1)
            for channel in ("sms", "email"):
                rows.append(
                    {
                        "appointment_id": aid,
                        "kind": "before",
                        "channel": channel,
                        "due_at": due,
                        "status": "scheduled",
                        "attempts": 0,
                        "detail": "",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        db.session.execute(insert(Reminder.__table__), rows)
    db.session.commit()
    return {"appointments": len(appointments), "reminders": 2 * len(appointments)}


def _set_due(ids_sql: str, due: datetime) -> None:
    """Put rows back to scheduled, due at `due` (untimed set-up between runs)."""
    db.session.execute(
        text(
            "UPDATE appointment_reminders SET status = 'scheduled', claimed_at = NULL,"
            f" attempts = 0, due_at = :due WHERE {ids_sql}"
        ),
        {"due": due.replace(tzinfo=None)},
    )
    db.session.commit()


def _drain() -> int:
    from crm.appointments.tasks import QUEUE
    from crm.queue import broker

    queue = broker.queues[QUEUE]
    n = 0
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()
        n += 1
    return n


def run(backend: str, runs: int, seed: int, drop: bool, size: int) -> list[Row]:
    from crm.appointments.tasks import deliver_claimed, sweep

    url = common.database_url(backend, "reminders")
    common.create_database(url)
    app = common.make_app(url)
    outbox = tempfile.mkdtemp(prefix="bench-outbox-")
    app.config["CRM_OUTBOX_DIR"] = outbox
    rows: list[Row] = []
    now = datetime.now(UTC).replace(microsecond=0)
    with app.test_request_context():
        upgrade()
        clock = perf_counter()
        figures = generate(seed, size, now)
        print(f"generated {figures} in {perf_counter() - clock:.1f} s")
        common.analyze(db.engine)
        past = now - timedelta(minutes=1)
        future = now + timedelta(days=1)
        sms = "channel = 'sms'"
        steady = "id % 100 < 2 AND channel = 'email'"  # 1% of the 200k rows
        everything = "1 = 1"
        # Nothing due but what each scenario sets due.
        _set_due(everything, future)
        shape = f"{figures['appointments']} upcoming appointments"

        # Backlog: all SMS reminders (one per appointment) due at once.
        claimed: list[int] = []

        def backlog() -> None:
            claimed.append(sweep(now)["claimed"])
            db.session.commit()

        backlog_stats = common.measure(
            backlog, runs, before=lambda: (_set_due(sms, past), _drain())
        )
        connection_sql = text(
            "UPDATE appointment_reminders SET status = 'sending', claimed_at = :now,"
            " attempts = attempts + 1 WHERE status = 'scheduled' AND due_at <= :now"
        )

        def bare() -> None:
            db.session.execute(connection_sql, {"now": now.replace(tzinfo=None)})
            db.session.commit()

        base_backlog = common.measure(bare, runs, before=lambda: _set_due(sms, past))
        _set_due(sms, future)
        rows.append(
            Row(
                shape,
                "reminders",
                figures["reminders"],
                backend,
                f"sweep: backlog, {claimed[-1]} due at once",
                backlog_stats.median,
                backlog_stats.p95,
                base_backlog.median,
                base_backlog.p95,
                BUDGET_MS,
                {"claimed": claimed[-1]},
            )
        )
        # Steady state: 1% due this minute.
        steady_claimed: list[int] = []

        def steady_run() -> None:
            steady_claimed.append(sweep(now)["claimed"])
            db.session.commit()

        steady_stats = common.measure(
            steady_run, runs * 3, before=lambda: (_set_due(steady, past), _drain())
        )
        base_steady = common.measure(bare, runs * 3, before=lambda: _set_due(steady, past))
        rows.append(
            Row(
                shape,
                "reminders",
                figures["reminders"],
                backend,
                f"sweep: steady, {steady_claimed[-1]} due",
                steady_stats.median,
                steady_stats.p95,
                base_steady.median,
                base_steady.p95,
                None,
                {"claimed": steady_claimed[-1]},
            )
        )
        _set_due(steady, future)
        _drain()
        # Sending a batch to the outbox (the actor's function, per-row checks).
        # Confirmations, so that the due time set here is the row's own (a day-before
        # row due at another time than the service's hour is skipped as moved).
        first = f"SELECT id FROM appointment_reminders WHERE {sms} ORDER BY id LIMIT {SEND_BATCH}"
        ids = list(db.session.scalars(sa.text(first)))
        batch_sql = f"id IN ({', '.join(str(i) for i in ids)})"
        db.session.execute(
            text(f"UPDATE appointment_reminders SET kind = 'confirmation' WHERE {batch_sql}")
        )
        db.session.commit()
        outcomes: list[dict[str, int]] = []

        def prepare_send() -> None:
            _set_due(batch_sql, past)
            sweep(now)
            db.session.commit()
            _drain()
            shutil.rmtree(outbox, ignore_errors=True)

        def send() -> None:
            outcomes.append(dict(deliver_claimed(ids, now, now)))

        send_stats = common.measure(send, max(3, runs // 2), before=prepare_send)
        rows.append(
            Row(
                shape,
                "reminders",
                figures["reminders"],
                backend,
                f"send {SEND_BATCH} SMS to the outbox",
                send_stats.median,
                send_stats.p95,
                None,
                None,
                None,
                outcomes[-1],
            )
        )
        db.session.rollback()
    with app.app_context():
        db.engine.dispose()
    shutil.rmtree(outbox, ignore_errors=True)
    if drop:
        common.drop_database(url)
    print(f"last send outcomes: {outcomes[-1]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--appointments", type=int, default=APPOINTMENTS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = run(args.backend, args.runs, args.seed, args.drop, args.appointments)
    common.print_table(rows)
    print(common.load_note())
    if args.json_out:
        common.write_json(args.json_out, rows, {"bench": "reminders", "runs": args.runs})


if __name__ == "__main__":
    main()
