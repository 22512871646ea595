"""The scheduler's leader lease and the record of each periodic job's last run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db
from crm.sqltypes import JSONType, UTCDateTime


class SchedulerLease(db.Model):
    """Who may run periodic jobs until when. One row per lease name (the migration
    seeds "scheduler"): a scheduler takes it with one conditional UPDATE, so two
    processes can never both hold it, and a dead leader's lease simply runs out."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PeriodicJobRun(db.Model):
    """The last run of one periodic job: what `jobs list` shows and what the scheduler
    reads to decide whether a job is due (so a restart does not re-run everything)."""

    __tablename__ = "periodic_job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    runs: Mapped[int] = mapped_column(Integer, default=0)
