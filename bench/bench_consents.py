"""Consent expiry sweep benchmark: `crm.consents.services.sweep_expiry` over --clients x
--purposes consent states (default 100,000 x 10 = 1,000,000), 1% of them inside their
purpose's 30-day warning window and 0.1% past their expiry.

Figures (median / p95 over --runs, after 3 warm-up runs):

* the app's sweep, first run: `sweep_expiry(AS_OF)` on the loaded data, rolled back
  after each run (untimed) so every run does the full work: records the expired
  consents and opens one task per consent entering its warning window;
* the same work as bare SQL text statements on the same connection (baseline);
* once committed: the first run with its commit (one run), then the second run with its
  commit, which must create nothing (idempotent), with the counts checked.

On PostgreSQL the tables are vacuumed (untimed) between the rolled-back runs and before
the second run: a rollback leaves dead row versions that autovacuum would clear between
two hourly sweeps, and without it each run would scan the previous runs' leftovers.

Every statement the sweep sends is printed: their number does not grow with the data
(set-based: INSERT ... SELECT and UPDATE ... WHERE, never a loop over rows in Python).

    .venv/bin/python -m bench.bench_consents --backend sqlite
    .venv/bin/python -m bench.bench_consents --backend postgresql
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask_migrate import upgrade
from sqlalchemy import func, insert, select, text

from bench import common
from bench.common import Row, Stats
from crm.clients.models import Client
from crm.consents.models import ConsentEvent, ConsentPurpose, ConsentState, LegalBasis
from crm.consents.services import PurposeSpec, add_months, create_purpose, latest_notices
from crm.consents.services import sweep_expiry as app_sweep
from crm.demo import ensure_demo_fields, generate_clients, insert_clients
from crm.extensions import db
from crm.tasks.models import Task

BUDGET_MS = 10_000.0
# The bench's clock: data and sweep use this instant, so a kept database stays valid.
AS_OF = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
WINDOW_SHARE = 0.01
PAST_SHARE = 0.001
WARNING_DAYS = 30
CHUNK = 50_000
PURPOSE_NAMES = [
    "Newsletter",
    "SMS appointment reminders",
    "Birthday greetings",
    "Loyalty programme",
    "Customer satisfaction surveys",
    "Product recommendations",
    "Event invitations",
    "Partner offers",
    "Photos on social media",
    "Referral programme",
]


# --- data ------------------------------------------------------------------------------


def create_purposes(count: int) -> list[ConsentPurpose]:
    purposes = []
    for name in PURPOSE_NAMES[:count]:
        spec = PurposeSpec(
            name=name,
            legal_basis=LegalBasis.CONSENT,
            retention_months=12,
            validity_months=24,
            warning_days=WARNING_DAYS,
            channels=["email", "sms"],
            data_categories="name, email address, phone number",
        )
        purposes.append(create_purpose(spec, {"en": f"{name}: what we do, and how."}, None))
    db.session.commit()
    return purposes


def _expiry(rng: random.Random) -> datetime:
    draw = rng.random()
    if draw < WINDOW_SHARE:  # inside the warning window: a task is due
        return AS_OF + timedelta(seconds=rng.randrange(3600, (WARNING_DAYS - 1) * 86400))
    if draw < WINDOW_SHARE + PAST_SHARE:  # past expiry: an "expired" event is due
        return AS_OF - timedelta(seconds=rng.randrange(3600, 10 * 86400))
    return AS_OF + timedelta(seconds=rng.randrange((WARNING_DAYS + 1) * 86400, 700 * 86400))


def consent_rows(
    client_ids: list[int], purposes: list[ConsentPurpose], rng: random.Random
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(event, state) row pairs: one "given" event and its state per client and purpose,
    with explicit event ids (the table is empty) so each state names its event."""
    notices = {p.id: latest_notices(p.id)["en"].id for p in purposes}
    event_id = 0
    for client_id in client_ids:
        for purpose in purposes:
            event_id += 1
            expires = _expiry(rng)
            given = add_months(expires, -24)
            yield (
                {
                    "id": event_id,
                    "client_id": client_id,
                    "purpose_id": purpose.id,
                    "notice_id": notices[purpose.id],
                    "kind": "given",
                    "method": "web_form",
                    "occurred_at": given,
                    "recorded_at": given,
                    "expires_at": expires,
                    "source_url": "https://example.com/signup",
                    "user_agent": "Mozilla/5.0",
                    "ip": "203.0.113.0",
                    "note": "",
                },
                {
                    "client_id": client_id,
                    "purpose_id": purpose.id,
                    "status": "given",
                    "since": given,
                    "expires_at": expires,
                    "notice_id": notices[purpose.id],
                    "basis_event_id": event_id,
                    "updated_at": given,
                },
            )


def load(clients: int, purposes_count: int, seed: int) -> None:
    upgrade()
    admin_id = common.create_admin()
    fields = ensure_demo_fields()
    db.session.commit()
    keys = {label: f.key for label, f in fields.items()}
    rng = random.Random(seed)
    started = time.perf_counter()
    common.loading_pragmas(db.session.connection())
    insert_clients(generate_clients(clients, rng, keys, [admin_id]))
    db.session.commit()
    print(f"  {clients:,} clients in {time.perf_counter() - started:.0f} s", flush=True)
    purposes = create_purposes(purposes_count)
    client_ids = list(db.session.scalars(select(Client.id).order_by(Client.id)))
    events, states = [], []
    done = 0
    for event, state in consent_rows(client_ids, purposes, rng):
        events.append(event)
        states.append(state)
        if len(events) >= CHUNK:
            done += _insert(events, states)
            events, states = [], []
            if done % 200_000 == 0:
                print(f"  {done:,} consents in {time.perf_counter() - started:.0f} s", flush=True)
    done += _insert(events, states)
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('consent_events', 'id'),"
                " (SELECT max(id) FROM consent_events))"
            )
        )
    db.session.commit()
    common.analyze(db.engine)
    db.engine.dispose()
    print(f"  {done:,} consents loaded in {time.perf_counter() - started:.0f} s", flush=True)


def _insert(events: list[dict[str, Any]], states: list[dict[str, Any]]) -> int:
    if not events:
        return 0
    db.session.execute(insert(ConsentEvent.__table__), events)
    db.session.execute(insert(ConsentState.__table__), states)
    db.session.commit()
    return len(events)


# --- the baseline: the same work as hand-written SQL -----------------------------------


def baseline_statements(dialect: str, purposes: list[tuple[int, int]]) -> list[str]:
    """The sweep's work spelled by hand: expire (insert events, update states), then open
    the warning tasks and mark the states warned."""
    lock = " FOR UPDATE OF consent_states" if dialect == "postgresql" else ""
    due_date = "date(s.expires_at)" if dialect == "sqlite" else "CAST(s.expires_at AS DATE)"
    statements = [
        "INSERT INTO consent_events (client_id, purpose_id, notice_id, kind, method,"
        " occurred_at, recorded_at, expires_at, source_url, user_agent, ip, note)"
        " SELECT client_id, purpose_id, notice_id, 'expired', 'system', expires_at, :now,"
        " expires_at, '', '', '', '' FROM consent_states"
        " WHERE status = 'given' AND expires_at IS NOT NULL AND expires_at <= :now"
        f" ORDER BY id{lock}",
        "UPDATE consent_states SET status = 'expired', since = expires_at,"
        " ended_at = expires_at, basis_event_id = NULL, warned_at = NULL, updated_at = :now"
        " WHERE status = 'given' AND expires_at IS NOT NULL AND expires_at <= :now",
    ]

    # Warn: all purposes at once, each purpose's window end a CASE branch.
    ends = " ".join(f"WHEN {pid} THEN :horizon_{pid}" for pid, _days in purposes)
    ids = ", ".join(str(pid) for pid, _days in purposes)

    def window(alias: str = "") -> str:
        return (
            f"{alias}status = 'given' AND {alias}expires_at > :now"
            f" AND {alias}expires_at <= :horizon_max"
            f" AND {alias}expires_at <= CASE {alias}purpose_id {ends} END"
            f" AND {alias}purpose_id IN ({ids}) AND {alias}warned_at IS NULL"
        )

    statements += [
        "INSERT INTO tasks (title, details, client_id, assignee_id, due_date, status,"
        " origin, origin_ref, created_at)"
        f" SELECT 'Consent expires', 'Renew or delete', s.client_id, c.owner_id, {due_date},"
        " 'open', 'consent_expiry', 'consent:' || CAST(s.basis_event_id AS VARCHAR), :now"
        " FROM consent_states s JOIN clients c ON c.id = s.client_id"
        f" WHERE {window('s.')} AND NOT EXISTS (SELECT 1 FROM tasks t"
        " WHERE t.client_id = s.client_id AND t.origin = 'consent_expiry'"
        " AND t.origin_ref = 'consent:' || CAST(s.basis_event_id AS VARCHAR))",
        f"UPDATE consent_states SET warned_at = :now WHERE {window()}",
    ]
    return statements


def baseline_params(dialect: str, purposes: list[tuple[int, int]]) -> dict[str, Any]:
    def stamp(moment: datetime) -> Any:
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        # SQLite compares the text SQLAlchemy stores: the same format, microseconds too.
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else naive

    params: dict[str, Any] = {"now": stamp(AS_OF)}
    for purpose_id, days in purposes:
        params[f"horizon_{purpose_id}"] = stamp(AS_OF + timedelta(days=days))
    params["horizon_max"] = max(params[f"horizon_{pid}"] for pid, _days in purposes)
    return params


# --- timing ----------------------------------------------------------------------------


def counts() -> dict[str, int]:
    return {
        "consent_events": db.session.scalar(select(func.count()).select_from(ConsentEvent)) or 0,
        "tasks": db.session.scalar(select(func.count()).select_from(Task)) or 0,
        "states given": db.session.scalar(
            select(func.count()).select_from(ConsentState).where(ConsentState.status == "given")
        )
        or 0,
    }


def reset() -> None:
    """Undo the previous run (untimed). On PostgreSQL a rollback leaves the dead row
    versions of its updates behind; VACUUM them, as autovacuum would between two hourly
    sweeps, so each run starts from the same table rather than a growing pile."""
    db.session.rollback()
    engine = db.engine
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) consent_states, consent_events, tasks")


def time_app(runs: int) -> tuple[Stats, dict[str, int]]:
    """The app's sweep, rolled back after every run (the rollback is not timed)."""
    seen: dict[str, int] = {}

    def run() -> None:
        seen.update(app_sweep(AS_OF).as_dict())

    stats = common.measure(run, runs, before=reset)
    reset()
    return stats, seen


def time_baseline(runs: int) -> Stats:
    purposes = [
        (p.id, p.warning_days)
        for p in db.session.scalars(select(ConsentPurpose).order_by(ConsentPurpose.id))
    ]
    dialect = db.session.get_bind().dialect.name
    statements = [text(sql) for sql in baseline_statements(dialect, purposes)]
    params = baseline_params(dialect, purposes)

    def run() -> None:
        connection = db.session.connection()
        for statement in statements:
            connection.execute(statement, params)

    stats = common.measure(run, runs, before=reset)
    reset()
    return stats


def explain_plans(engine: sa.Engine, seen: list[tuple[str, Any]]) -> None:
    """The plans of the sweep's writes (no ANALYZE: that would run them)."""
    with engine.connect() as conn:
        for statement, parameters in seen:
            if not statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
                continue
            print(f"\n  {common.one_line(statement)[:160]}")
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
            for row in conn.exec_driver_sql(prefix + statement, parameters).all():
                print(f"    {row[-1]}")


def committed_runs(runs: int) -> tuple[float, dict[str, int], Stats, list[dict[str, int]]]:
    """First run with its commit, then `runs` more, each committed: they create nothing."""
    start = time.perf_counter()
    first = app_sweep(AS_OF).as_dict()
    db.session.commit()
    first_ms = (time.perf_counter() - start) * 1000
    reset()  # as autovacuum would before the next hourly run
    later: list[dict[str, int]] = []

    def run() -> None:
        later.append(app_sweep(AS_OF).as_dict())
        db.session.commit()

    return first_ms, first, common.measure(run, runs), later


# --- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--purposes", type=int, default=10, choices=range(1, 11))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-plans", action="store_true", help="skip printing the plans")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse the generated database when it exists (each run works on a copy)",
    )
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    return parser.parse_args()


def copy_database(source: str, target: str) -> None:
    """A fresh working copy of the generated database: the committed runs change it,
    and consent events cannot be deleted, so --keep keeps the untouched original."""
    common.drop_database(target)
    if source.startswith("sqlite"):
        engine = sa.create_engine(source)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        shutil.copyfile(source.removeprefix("sqlite:///"), target.removeprefix("sqlite:///"))
        return
    admin = sa.create_engine(
        f"{common.PG_SERVER.replace('postgresql:', 'postgresql+psycopg:')}/postgres",
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        name, template = target.rsplit("/", 1)[1], source.rsplit("/", 1)[1]
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    admin.dispose()


def main() -> None:
    args = parse_args()
    size = args.clients * args.purposes
    pristine = common.database_url(args.backend, f"consents_{size}")
    url = common.database_url(args.backend, f"consents_{size}_run")
    if not (args.keep and common.database_exists(pristine)):
        common.create_database(pristine)
        print(f"generating {size:,} consents into {pristine}", flush=True)
        loader = common.make_app(pristine)
        with loader.app_context():
            load(args.clients, args.purposes, args.seed)
            db.engine.dispose()
    else:
        print(f"reusing {pristine}", flush=True)
    copy_database(pristine, url)
    app = common.make_app(url)
    rows: list[Row] = []
    with app.app_context():
        before = counts()
        print(f"before: {before}", flush=True)
        engine = db.engine
        with common.captured_statements(engine) as seen:
            result = app_sweep(AS_OF).as_dict()
        reset()
        writes = [s for s in seen if s[0].lstrip().upper().startswith(("INSERT", "UPDATE"))]
        print(f"\none sweep: {result}; {len(seen)} statements, {len(writes)} writes:")
        for statement, _params in seen:
            print(f"  {common.one_line(statement)[:150]}")
        if not args.no_plans:
            explain_plans(engine, seen)
        app_stats, app_result = time_app(args.runs)
        base = time_baseline(args.runs)
        print(f"\nrolled-back runs: app {app_result}", flush=True)
        first_ms, first, second, later = committed_runs(args.runs)
        after = counts()
        db.session.rollback()
        created_later = {k: sum(r[k] for r in later) for k in ("expired", "warned")}
        print(f"committed first run: {first}; later runs together: {created_later}")
        print(f"after: {after}")
        expected_events = before["consent_events"] + first["expired"]
        expected_tasks = before["tasks"] + first["warned"]
        idempotent = (
            created_later == {"expired": 0, "warned": 0}
            and after["consent_events"] == expected_events
            and after["tasks"] == expected_tasks
        )
        print(f"second run creates nothing: {'yes' if idempotent else 'NO'}")
        extra = {"result": first, "idempotent": idempotent, "statements": len(seen)}
        rows = [
            Row("sweep", "first run", size, args.backend, "sweep_expiry() rolled back",
                app_stats.median, app_stats.p95, base.median, base.p95, BUDGET_MS, extra),
            Row("sweep", "first run", size, args.backend, "sweep_expiry() + commit",
                first_ms, first_ms, None, None, BUDGET_MS, first),
            Row("sweep", "second run", size, args.backend, "sweep_expiry() + commit",
                second.median, second.p95, None, None, BUDGET_MS, created_later),
        ]  # fmt: skip
    print()
    common.print_table(rows)
    print(common.load_note())
    if args.json_out:
        common.write_json(args.json_out, rows, {"before": before, "after": after} | vars(args))
    with app.app_context():
        db.engine.dispose()
    common.drop_database(url)
    if args.drop:
        common.drop_database(pristine)


if __name__ == "__main__":
    main()
