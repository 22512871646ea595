"""Privacy actors and periodic jobs: deadline tasks for open requests, building an
export, removing expired export files."""

from __future__ import annotations

from datetime import datetime, timedelta

from crm.privacy import services as register
from crm.queue import actor
from crm.scheduler import periodic


@periodic("privacy.deadlines", every=timedelta(hours=1))
def request_deadlines(now: datetime) -> dict[str, int]:
    """Tasks for data-subject requests due within a week, and for overdue ones."""
    return register.sync_deadline_tasks(now).as_dict()


# --- export ----------------------------------------------------------------------------


@actor(max_retries=3, min_backoff=10_000, time_limit=30 * 60 * 1000)
def build_export(export_id: int) -> None:
    """Build one export. A nudge: it builds only an export the database says is
    pending, so a duplicate or late message does nothing."""
    from crm.privacy.export import run_export

    run_export(int(export_id))


@periodic("privacy.exports_reconcile", every=timedelta(minutes=1))
def exports_reconcile(now: datetime) -> dict[str, int]:
    """Nudge pending exports again; hand exports of dead workers to another."""
    from crm.extensions import db
    from crm.privacy.export import reconcile_exports
    from crm.queue import enqueue_after_commit

    failed, nudge = reconcile_exports(now)
    for export_id in nudge:
        enqueue_after_commit(build_export, export_id)
    db.session.flush()
    return {"nudged": len(nudge), "given_up": failed}


@periodic("privacy.exports_expiry", every=timedelta(hours=1))
def exports_expiry(now: datetime) -> dict[str, int]:
    """Remove export files past their download window."""
    from crm.privacy.export import expire_exports

    return expire_exports(now)
