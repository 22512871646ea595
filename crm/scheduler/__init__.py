"""Periodic jobs: a registry, one runner, and a leader lease so only one scheduler runs.

A domain declares a job with the `periodic` decorator in a module listed in
`JOB_MODULES`:

    @periodic("consents.expiry", every=timedelta(hours=1))
    def sweep(now: datetime) -> dict[str, int]:
        ...  # change state and flush; the runner commits

Jobs take the time to act for (an injectable clock: tests walk it forward), change
state and flush, and return figures for the log. The runner commits after each job
and rolls back a job that raised, so one failing job never stops the others.

How jobs are started:
- `flask --app crm jobs run-periodic` runs every job once, now (cron or by hand);
- embedded mode (`flask --app crm serve` without a broker) runs a scheduler thread;
- production runs `flask --app crm jobs scheduler` (one or more processes).
The thread and the processes take a lease row in the database before running anything
(crm.scheduler.runner), so however many are started, one leads at a time and another
takes over when the leader stops renewing its lease.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Modules that declare periodic jobs; a new domain adds its own here.
JOB_MODULES: list[str] = [
    "crm.appointments.tasks",
    "crm.campaigns.tasks",
    "crm.consents.tasks",
    "crm.mailing.tasks",
    "crm.privacy.tasks",
]

JobFunction = Callable[[datetime], "dict[str, int] | None"]


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    func: JobFunction
    every: timedelta
    description: str


_REGISTRY: dict[str, PeriodicJob] = {}


def periodic(name: str, *, every: timedelta, description: str = "") -> Callable[[Any], Any]:
    """Register `func(now)` to run every `every`; jobs run in registration order."""

    def register(func: JobFunction) -> JobFunction:
        doc = (func.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PeriodicJob(name, func, every, description or (doc[0] if doc else ""))
        return func

    return register


def load_jobs() -> None:
    for module in JOB_MODULES:
        importlib.import_module(module)


def registered_jobs() -> list[PeriodicJob]:
    load_jobs()
    return list(_REGISTRY.values())


def get_job(name: str) -> PeriodicJob | None:
    load_jobs()
    return _REGISTRY.get(name)
