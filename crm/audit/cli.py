"""`flask audit verify` and `flask audit prune` (retention)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from flask.cli import with_appcontext

from crm.audit.services import prune_before, verify_chain
from crm.extensions import db
from crm.sqltypes import utcnow

audit_cli = click.Group("audit", help="Audit log verification and retention.")


@audit_cli.command("verify")
@with_appcontext
def verify_command() -> None:
    """Recompute the hash chain from the newest checkpoint; exit 1 on the first bad entry."""
    result = verify_chain()
    db.session.rollback()
    if not result.ok:
        click.echo(
            f"Audit entry {result.bad_id} failed verification: {result.reason} "
            f"({result.count} entries before it verified).",
            err=True,
        )
        raise SystemExit(1)
    if result.redacted:
        click.echo(
            f"{result.count} entries verified "
            f"({result.redacted} redacted by erasure, as their erasure entries record)."
        )
        return
    click.echo(f"{result.count} entries verified.")


@audit_cli.command("prune")
@click.option(
    "--before",
    "before",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Remove entries created before this date (UTC midnight).",
)
@click.option("--keep-days", type=click.IntRange(min=1), help="Remove entries older than this.")
@with_appcontext
def prune_command(before: datetime | None, keep_days: int | None) -> None:
    """Retention: remove old entries, leaving a checkpoint so the rest still verifies."""
    if (before is None) == (keep_days is None):
        raise click.UsageError("Give exactly one of --before or --keep-days.")
    cutoff = before.replace(tzinfo=UTC) if before else utcnow() - timedelta(days=keep_days or 0)
    result = prune_before(cutoff)
    db.session.commit()
    if result.checkpoint is None:
        click.echo(f"No audit entries before {cutoff.isoformat()}.")
        return
    click.echo(
        f"{result.removed} audit entries before {cutoff.isoformat()} removed; "
        f"checkpoint at entry {result.checkpoint.last_removed_id}."
    )
