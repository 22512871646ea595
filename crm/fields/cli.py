from __future__ import annotations

import click
from flask.cli import with_appcontext

from crm.extensions import db
from crm.fields.services import rebuild_indexes

fields_cli = click.Group("fields", help="Custom field maintenance.")


@fields_cli.command("reindex")
@with_appcontext
def reindex_command() -> None:
    """Create any missing custom field index (e.g. after restoring a backup)."""
    names = rebuild_indexes()
    db.session.commit()
    click.echo(f"{len(names)} custom field indexes present.")
