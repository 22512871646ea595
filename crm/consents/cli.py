"""`flask --app crm consents …`: rebuild the state table, run the sweep, check a gate."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from crm.consents import services
from crm.consents.policy import may_contact
from crm.extensions import db

consents_cli = click.Group("consents", help="The consent ledger.")


@consents_cli.command("rebuild")
@with_appcontext
def rebuild_command() -> None:
    """Derive the current state of every client and purpose again from the events."""
    count = services.rebuild_states()
    db.session.commit()
    click.echo(f"Rebuilt {count} consent states from the events.")


@consents_cli.command("sweep")
@with_appcontext
def sweep_command() -> None:
    """Record expired consents and open warning tasks now (also a periodic job)."""
    result = services.sweep_expiry()
    db.session.commit()
    click.echo(f"{result.expired} expired, {result.warned} warning tasks opened.")


@consents_cli.command("check")
@click.argument("client_id", type=int)
@click.argument("purpose")
@click.argument("channel")
@with_appcontext
def check_command(client_id: int, purpose: str, channel: str) -> None:
    """Ask the gate: may CLIENT_ID be contacted for PURPOSE (key) over CHANNEL now?"""
    allowed = may_contact(client_id, purpose, channel)
    click.echo("yes" if allowed else "no")
    if not allowed:
        raise SystemExit(1)
