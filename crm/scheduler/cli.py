"""`flask --app crm jobs …`: run the periodic jobs once, list them, or run a scheduler."""

from __future__ import annotations

import signal
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from crm.extensions import db
from crm.scheduler import get_job, registered_jobs
from crm.scheduler.models import PeriodicJobRun, SchedulerLease
from crm.scheduler.runner import LEASE_NAME, TICK_SECONDS, Scheduler, release_lease, run_all
from crm.sqltypes import utcnow

jobs_cli = click.Group("jobs", help="Periodic jobs (consent expiry, retention, …).")


@jobs_cli.command("run-periodic")
@click.option("--job", "only", default=None, help="Run only this job (see `jobs list`).")
@with_appcontext
def run_periodic_command(only: str | None) -> None:
    """Run every periodic job once, now (needs no scheduler; safe to repeat)."""
    if only is not None and get_job(only) is None:
        raise click.ClickException(f"no periodic job named {only!r}; see `jobs list`")
    failed = 0
    for outcome in run_all(only=only):
        figures = ", ".join(f"{k} {v}" for k, v in outcome.stats.items()) or "nothing to do"
        if outcome.ok:
            click.echo(f"{outcome.name}: {figures} ({outcome.seconds:.2f} s)")
        else:
            failed += 1
            click.echo(f"{outcome.name}: FAILED: {outcome.error}", err=True)
    if failed:
        raise SystemExit(1)


@jobs_cli.command("list")
@with_appcontext
def list_command() -> None:
    """The periodic jobs, how often they run and how their last run went."""
    runs = {r.name: r for r in db.session.scalars(select(PeriodicJobRun))}
    for job in registered_jobs():
        run = runs.get(job.name)
        every = int(job.every.total_seconds() // 60)
        if run is None or run.last_started_at is None:
            last = "never run"
        else:
            state = "ok" if run.last_ok else f"FAILED: {run.last_error}"
            last = f"last {run.last_started_at:%Y-%m-%d %H:%M} UTC, {state}"
        click.echo(f"{job.name}\tevery {every} min\t{last}\t{job.description}")
    lease = db.session.get(SchedulerLease, LEASE_NAME)
    if lease is not None and lease.holder and lease.expires_at > utcnow():
        until = f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        click.echo(f"scheduler lease: {lease.holder} until {until}")
    else:
        click.echo("no scheduler is running (the lease is free)")


@jobs_cli.command("scheduler")
@click.option("--tick", default=TICK_SECONDS, show_default=True, type=float, help="Seconds.")
@with_appcontext
def scheduler_command(tick: float) -> None:
    """Run the scheduler in the foreground (production). Start one or several: they
    share a lease in the database, so one leads and the others stand by."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    scheduler = Scheduler(app, interval=tick)

    def stop(*_args: Any) -> None:
        scheduler.request_stop()

    signal.signal(signal.SIGTERM, stop)
    click.echo(f"scheduler {scheduler.holder}: checking every {tick:g} s (Ctrl-C stops)")
    try:
        scheduler.run()  # in this thread; returns (giving the lease up) once stopped
    except KeyboardInterrupt:
        with app.app_context():
            release_lease(scheduler.holder)
