"""Shared helpers for the benchmarks: bench databases, the app, timing, result tables.

Nothing here asserts on time: the scripts print figures and PASS/FAIL against the
budgets in DESIGN.md, and a person reads them.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-only password, not a secret"  # noqa: S105
WARMUP = 3


# --- databases -------------------------------------------------------------------------


def database_url(backend: str, stem: str) -> str:
    """Where a bench database lives: a file under bench/.data/ or a PostgreSQL database
    named crm_bench_<stem> on the local server."""
    if backend == "sqlite":
        return f"sqlite:///{DATA_DIR / stem}.sqlite3"
    return f"{PG_SERVER}/crm_bench_{stem}"


def _pg_admin() -> sa.Engine:
    return sa.create_engine(
        f"{PG_SERVER.replace('postgresql:', 'postgresql+psycopg:')}/postgres",
        isolation_level="AUTOCOMMIT",
    )


def _sqlite_files(url: str) -> list[Path]:
    path = Path(url.removeprefix("sqlite:///"))
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def database_exists(url: str) -> bool:
    if url.startswith("sqlite"):
        return _sqlite_files(url)[0].exists()
    name = url.rsplit("/", 1)[1]
    engine = _pg_admin()
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT 1 FROM pg_database WHERE datname = :n")
            found = conn.scalar(query, {"n": name})
    finally:
        engine.dispose()
    return found is not None


def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        for path in _sqlite_files(url):
            path.unlink(missing_ok=True)
        return
    name = url.rsplit("/", 1)[1]
    engine = _pg_admin()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def create_database(url: str) -> None:
    """A fresh, empty database (an existing one is dropped first)."""
    drop_database(url)
    if url.startswith("sqlite"):
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        return
    name = url.rsplit("/", 1)[1]
    engine = _pg_admin()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def make_app(url: str) -> Flask:
    """The app as the tests build it (tests/conftest.py), pointed at the bench database."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CRM_INSTANCE_PATH", str(DATA_DIR / "instance"))
    from tests.conftest import make_test_app

    return make_test_app(url, DATA_DIR / "files")


def analyze(engine: sa.Engine) -> None:
    """Planner statistics after a bulk load: ANALYZE on SQLite, VACUUM ANALYZE on
    PostgreSQL (VACUUM also sets the visibility map that index-only scans need)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("VACUUM ANALYZE")


def loading_pragmas(connection: sa.Connection) -> None:
    """A big page cache on this connection while bulk loading a throwaway
    SQLite database; dispose of the engine after loading so benchmarks get defaults."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA cache_size=-1000000")


def create_admin() -> int:
    from crm.auth.services import create_user
    from crm.extensions import db

    user = create_user(ADMIN_EMAIL, ADMIN_PASSWORD, "admin", full_name="Bench Admin")
    db.session.commit()
    return user.id


def login(client: FlaskClient) -> None:
    response = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    if response.status_code != 302:
        raise RuntimeError(f"login failed: {response.status_code}")


# --- statements and plans --------------------------------------------------------------


@contextmanager
def captured_statements(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) the engine sends while the block runs."""
    seen: list[tuple[str, Any]] = []

    def listener(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def explain(conn: sa.Connection, statement: str, parameters: Any) -> str:
    """The plan of a driver-level statement: EXPLAIN QUERY PLAN on SQLite, EXPLAIN
    (ANALYZE, BUFFERS) on PostgreSQL (actual rows and timing per node)."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        return "\n".join(f"{'  ' * _depth(rows, r[0])}{r[3]}" for r in rows)
    rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).all()
    return "\n".join(r[0] for r in rows)


def explain_text(conn: sa.Connection, sql: str, params: dict[str, Any]) -> str:
    """The plan of a text() query with :named parameters."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}"), params).all()
        return "\n".join(f"{'  ' * _depth(rows, r[0])}{r[3]}" for r in rows)
    rows = conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"), params).all()
    return "\n".join(r[0] for r in rows)


def _depth(rows: list[Any], node: int) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth = 0
    while parents.get(node, 0):
        node = parents[node]
        depth += 1
    return depth


def one_line(sql: str) -> str:
    return " ".join(sql.split())


# --- timing and tables -----------------------------------------------------------------


@dataclass
class Stats:
    median: float
    p95: float
    runs: int


def measure(run: Callable[[], Any], runs: int, before: Callable[[], Any] | None = None) -> Stats:
    """Milliseconds per call of `run` over `runs` calls after a short warm-up; `before`
    runs untimed ahead of every call (e.g. to empty the ORM identity map)."""
    samples: list[float] = []
    for n in range(WARMUP + runs):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        elapsed = (time.perf_counter() - start) * 1000
        if n >= WARMUP:
            samples.append(elapsed)
    samples.sort()
    p95 = samples[max(0, math.ceil(0.95 * len(samples)) - 1)]
    return Stats(statistics.median(samples), p95, len(samples))


@dataclass
class Row:
    shape: str
    page: str
    size: int
    backend: str
    measured: str
    median: float
    p95: float
    base_median: float | None
    base_p95: float | None
    budget: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.budget is None:
            return "-"
        return "PASS" if self.p95 < self.budget else "FAIL"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(rows: list[Row]) -> None:
    header = [
        "shape",
        "page",
        "size",
        "backend",
        "measured",
        "median ms",
        "p95 ms",
        "base median",
        "base p95",
        "budget",
        "result",
    ]
    body = [
        [
            r.shape,
            r.page,
            f"{r.size:,}",
            r.backend,
            r.measured,
            _ms(r.median),
            _ms(r.p95),
            _ms(r.base_median),
            _ms(r.base_p95),
            "-" if r.budget is None else f"<{r.budget:g}",
            r.verdict,
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for line in body:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def load_note() -> str:
    """The machine's load while measuring: other work on the same cores shows in p95."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def write_json(path: str, rows: list[Row], meta: dict[str, Any]) -> None:
    table = [asdict(r) | {"result": r.verdict} for r in rows]
    out = {"meta": meta | {"load": load_note()}, "rows": table}
    Path(path).write_text(json.dumps(out, indent=2, default=str))
