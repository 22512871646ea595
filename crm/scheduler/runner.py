"""Running periodic jobs: once (`jobs run-periodic`), or as a scheduler loop that first
takes the leader lease.

The lease is one row in `scheduler_leases`. A scheduler takes or renews it with

    UPDATE scheduler_leases SET holder = me, expires_at = now + ttl
    WHERE name = 'scheduler' AND (holder = me OR expires_at <= now)

and leads only when that updated the row. The database serialises the two UPDATEs of a
race, so at most one process holds an unexpired lease; a leader that dies stops renewing
and another takes over once its lease has run out. This works the same on SQLite
(embedded: several web processes on one file) and PostgreSQL (production).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from crm.extensions import db
from crm.scheduler import PeriodicJob, registered_jobs
from crm.scheduler.models import PeriodicJobRun, SchedulerLease
from crm.sqltypes import utcnow

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
LEASE_TTL = timedelta(seconds=90)
TICK_SECONDS = 30.0
_AFTER_COMMIT = "crm_job_after_commit"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def holder_id() -> str:
    """Names this process in the lease row (for `jobs list` and the logs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- the lease -------------------------------------------------------------------------


def acquire_lease(holder: str, now: datetime | None = None, ttl: timedelta = LEASE_TTL) -> bool:
    """Take or renew the leader lease; True when `holder` leads until now + ttl.
    Commits at once: the lease must be visible to the other schedulers."""
    now = now or utcnow()
    result = db.session.execute(
        update(SchedulerLease)
        .where(
            SchedulerLease.name == LEASE_NAME,
            or_(SchedulerLease.holder == holder, SchedulerLease.expires_at <= now),
        )
        .values(holder=holder, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0 and db.session.get(SchedulerLease, LEASE_NAME) is None:
        # The migration seeds the row; recreate it if someone removed it.
        db.session.add(SchedulerLease(name=LEASE_NAME, holder=holder, expires_at=now + ttl))
        db.session.commit()
        return True
    db.session.commit()
    return result.rowcount == 1


def release_lease(holder: str) -> None:
    """Give the lease up (on shutdown), so another scheduler need not wait for it."""
    db.session.execute(
        update(SchedulerLease)
        .where(SchedulerLease.name == LEASE_NAME, SchedulerLease.holder == holder)
        .values(expires_at=_EPOCH)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


# --- running jobs ----------------------------------------------------------------------


def after_commit(callback: Callable[[], Any]) -> None:
    """Run `callback` once the job's transaction committed (e.g. remove files whose rows
    the job deleted); dropped if the job fails."""
    db.session.info.setdefault(_AFTER_COMMIT, []).append(callback)


@dataclass
class JobOutcome:
    name: str
    ok: bool
    seconds: float
    stats: dict[str, int] = field(default_factory=dict)
    error: str = ""


def _record_run(name: str, started: datetime, ok: bool, stats: dict[str, Any], error: str) -> None:
    row = db.session.get(PeriodicJobRun, name)
    if row is None:
        row = PeriodicJobRun(name=name, runs=0)
        db.session.add(row)
    row.last_started_at = started
    row.last_finished_at = utcnow()
    row.last_ok = ok
    row.last_error = error
    row.last_stats = stats
    row.runs = (row.runs or 0) + 1
    db.session.flush()


def run_job(job: PeriodicJob, now: datetime | None = None) -> JobOutcome:
    """Run one job for the time `now` and commit; a failure is rolled back and recorded."""
    now = now or utcnow()
    clock = time.perf_counter()
    try:
        stats = dict(job.func(now) or {})
        _record_run(job.name, now, True, stats, "")
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        db.session.info.pop(_AFTER_COMMIT, None)
        log.exception("periodic job %s failed", job.name)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        _record_run(job.name, now, False, {}, error)
        db.session.commit()
        return JobOutcome(job.name, False, time.perf_counter() - clock, {}, error)
    for callback in db.session.info.pop(_AFTER_COMMIT, []):
        callback()
    return JobOutcome(job.name, True, time.perf_counter() - clock, stats)


def run_all(now: datetime | None = None, only: str | None = None) -> list[JobOutcome]:
    """Every registered job once, in registration order (or just the one named)."""
    jobs = [j for j in registered_jobs() if only is None or j.name == only]
    return [run_job(job, now) for job in jobs]


def due_jobs(now: datetime | None = None) -> list[PeriodicJob]:
    now = now or utcnow()
    rows = db.session.execute(select(PeriodicJobRun.name, PeriodicJobRun.last_started_at))
    last = {name: started for name, started in rows}
    due = []
    for job in registered_jobs():
        started = last.get(job.name)
        if started is None or started + job.every <= now:
            due.append(job)
    db.session.rollback()  # end the read transaction: jobs start their own
    return due


def tick(holder: str) -> list[JobOutcome]:
    """One scheduler step: lead (or return), then run whatever is due. The lease is
    renewed before each job, and the step stops if it was lost meanwhile."""
    outcomes: list[JobOutcome] = []
    if not acquire_lease(holder):
        return outcomes
    for job in due_jobs():
        if not acquire_lease(holder):
            break
        outcomes.append(run_job(job))
    return outcomes


# --- the scheduler loop ----------------------------------------------------------------


class Scheduler(threading.Thread):
    """Calls `tick` every `interval` seconds inside an app context until stopped."""

    def __init__(self, app: Flask, interval: float = TICK_SECONDS) -> None:
        super().__init__(name="crm-scheduler", daemon=True)
        self.app = app
        self.interval = interval
        self.holder = holder_id()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.step()
            self._stop_event.wait(self.interval)
        with self.app.app_context():
            try:
                release_lease(self.holder)
            except Exception:
                log.exception("could not release the scheduler lease")
            finally:
                db.session.remove()

    def step(self) -> list[JobOutcome]:
        with self.app.app_context():
            try:
                return tick(self.holder)
            except Exception:
                # The database may be briefly unavailable: try again on the next tick.
                log.exception("scheduler tick failed")
                db.session.rollback()
                return []
            finally:
                db.session.remove()

    def request_stop(self) -> None:
        self._stop_event.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self.request_stop()
        if self.is_alive():
            self.join(timeout)


_embedded: dict[str, Scheduler | None] = {"thread": None}
_embedded_lock = threading.Lock()


def start_embedded_scheduler(app: Flask) -> Scheduler:
    """Embedded mode: one scheduler thread in this process (started once)."""
    with _embedded_lock:
        thread = _embedded["thread"]
        if thread is None or not thread.is_alive():
            thread = Scheduler(app)
            thread.start()
            _embedded["thread"] = thread
    return thread
