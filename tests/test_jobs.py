"""Periodic jobs: the registry, `flask jobs run-periodic`, the leader lease that lets
one scheduler run at a time, and a job that fails without stopping the others."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from crm import scheduler
from crm.extensions import db
from crm.scheduler import PeriodicJob, get_job, registered_jobs
from crm.scheduler.models import PeriodicJobRun, SchedulerLease
from crm.scheduler.runner import (
    LEASE_NAME,
    Scheduler,
    acquire_lease,
    after_commit,
    due_jobs,
    release_lease,
    run_all,
    run_job,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def extra_jobs(monkeypatch):  # type: ignore[no-untyped-def]
    """Register test jobs for one test only."""
    calls: list[str] = []

    def add(name: str, fail: bool = False) -> None:
        def job(now: datetime) -> dict[str, int]:
            calls.append(name)
            if fail:
                raise RuntimeError("the mail server is on fire")
            return {"done": 1}

        monkeypatch.setitem(
            scheduler._REGISTRY, name, PeriodicJob(name, job, timedelta(minutes=5), name)
        )

    add.calls = calls  # type: ignore[attr-defined]
    return add


def test_domains_register_their_jobs():
    names = [job.name for job in registered_jobs()]
    assert {"campaigns.reconcile", "consents.expiry", "consents.retention"} <= set(names)
    job = get_job("consents.expiry")
    assert job is not None and job.every == timedelta(hours=1) and job.description
    reconcile = get_job("campaigns.reconcile")
    assert reconcile is not None and reconcile.every == timedelta(minutes=1)


def test_a_decorated_function_becomes_a_job(monkeypatch):
    monkeypatch.setattr(scheduler, "_REGISTRY", dict(scheduler._REGISTRY))

    @scheduler.periodic("test.nightly", every=timedelta(days=1))
    def nightly(now: datetime) -> None:
        """Tidy up at night."""

    assert get_job("test.nightly") == PeriodicJob(
        "test.nightly", nightly, timedelta(days=1), "Tidy up at night."
    )


def test_run_periodic_runs_every_job_once_now(app, extra_jobs):
    extra_jobs("test.ok")
    result = app.test_cli_runner().invoke(args=["jobs", "run-periodic"])
    assert result.exit_code == 0, result.output
    assert "consents.expiry: expired 0, warned 0" in result.output
    assert "test.ok: done 1" in result.output
    assert extra_jobs.calls == ["test.ok"]
    with app.app_context():
        runs = {r.name: r for r in db.session.scalars(select(PeriodicJobRun))}
        assert runs["test.ok"].last_ok and runs["test.ok"].runs == 1
        assert runs["consents.retention"].last_stats == {"review_tasks": 0, "anonymised": 0}
    listing = app.test_cli_runner().invoke(args=["jobs", "list"])
    assert "consents.expiry\tevery 60 min\tlast " in listing.output
    unknown = app.test_cli_runner().invoke(args=["jobs", "run-periodic", "--job", "nope"])
    assert unknown.exit_code != 0 and "no periodic job named 'nope'" in unknown.output


def test_a_failing_job_is_recorded_and_the_others_still_run(app, extra_jobs):
    extra_jobs("test.broken", fail=True)
    extra_jobs("test.after")
    result = app.test_cli_runner().invoke(args=["jobs", "run-periodic"])
    assert result.exit_code == 1
    assert "test.broken: FAILED: RuntimeError: the mail server is on fire" in result.output
    assert extra_jobs.calls == ["test.broken", "test.after"]
    with app.app_context():
        broken = db.session.get(PeriodicJobRun, "test.broken")
        assert broken.last_ok is False and "on fire" in broken.last_error


def test_after_commit_callbacks_run_only_when_the_job_committed(app, monkeypatch):
    ran: list[str] = []

    def good(now: datetime) -> None:
        after_commit(lambda: ran.append("good"))

    def bad(now: datetime) -> None:
        after_commit(lambda: ran.append("bad"))
        raise ValueError("no")

    with app.app_context():
        assert run_job(PeriodicJob("t.good", good, timedelta(hours=1), "")).ok
        assert not run_job(PeriodicJob("t.bad", bad, timedelta(hours=1), "")).ok
    assert ran == ["good"]


def test_one_leader_at_a_time(app):
    with app.app_context():
        assert acquire_lease("web-1", now=NOW)
        assert not acquire_lease("web-2", now=NOW + timedelta(seconds=30))
        assert acquire_lease("web-1", now=NOW + timedelta(seconds=60))  # renewal
        # The leader stops renewing (its process died): another takes over after the TTL.
        later = NOW + timedelta(seconds=60) + timedelta(seconds=91)
        assert acquire_lease("web-2", now=later)
        assert not acquire_lease("web-1", now=later)
        lease = db.session.get(SchedulerLease, LEASE_NAME)
        assert lease.holder == "web-2"
        release_lease("web-2")
        assert acquire_lease("web-1", now=later)


def test_jobs_are_due_by_their_interval(app, extra_jobs):
    extra_jobs("test.often")
    with app.app_context():
        run_all(now=NOW)

        # The reconcile jobs run every minute: leave them out of the comparison.
        every_minute = {j.name for j in registered_jobs() if j.every <= timedelta(minutes=1)}

        def due(at: datetime) -> set[str]:
            return {j.name for j in due_jobs(at)} - every_minute

        assert due(NOW + timedelta(seconds=30)) == set() == {j.name for j in due_jobs(NOW)}
        assert due(NOW + timedelta(minutes=4)) == set()
        assert due(NOW + timedelta(minutes=5)) == {"test.often"}
        hourly = {
            "consents.expiry",
            "mailing.import_files",
            "privacy.deadlines",
            "privacy.exports_expiry",
        }
        assert due(NOW + timedelta(hours=1)) == hourly | {"test.often"}


def test_two_schedulers_run_each_due_job_once(app, extra_jobs):
    extra_jobs("test.once")
    first, second = Scheduler(app), Scheduler(app)
    assert {o.name for o in first.step()} >= {"test.once", "consents.expiry"}
    assert second.step() == []  # not the leader
    assert first.step() == []  # leader, but nothing is due yet
    assert extra_jobs.calls == ["test.once"]
    with app.app_context():
        release_lease(first.holder)


def test_the_embedded_scheduler_thread_runs_and_stops(app, extra_jobs):
    extra_jobs("test.embedded")
    thread = Scheduler(app, interval=3600)
    thread.start()  # its first step runs at once, then it waits an hour
    deadline = time.monotonic() + 30
    while not extra_jobs.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    thread.stop()  # wakes it from its wait; it gives the lease up and ends
    assert not thread.is_alive()
    assert extra_jobs.calls == ["test.embedded"]
    with app.app_context():
        lease = db.session.get(SchedulerLease, LEASE_NAME)
        assert lease.expires_at.year == 1970  # released
