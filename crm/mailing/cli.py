"""`flask --app crm import clients FILE.csv --list NAME --basis BASIS`: CSV import of
clients into a mailing list (see crm.mailing.importer)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from flask.cli import with_appcontext

from crm.extensions import db
from crm.fields.services import active_fields
from crm.mailing import importer
from crm.mailing.services import MailingError

import_cli = click.Group("import", help="Import data from files.")


@import_cli.command("clients")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "list_name", required=True, help="The list (created if missing).")
@click.option(
    "--basis",
    required=True,
    help="Legal basis: consent, contract, legal_obligation, vital_interests, public_task, "
    "legitimate_interest.",
)
@click.option("--method", default="import", show_default=True, help="How the clients agreed.")
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Map a header to a field (first_name, email, cf:<key>, or nothing to ignore); "
    "unmapped columns are guessed from their header.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-row error report (CSV) here.",
)
@with_appcontext
def import_clients_command(
    path: Path,
    list_name: str,
    basis: str,
    method: str,
    mapping: tuple[str, ...],
    report: Path | None,
) -> None:
    """Import clients from a UTF-8 CSV file with a header row into a mailing list."""
    started = time.perf_counter()
    try:
        with importer.open_text(path) as stream:
            header, _rows = importer.read_csv(stream)
        targets = importer.guess_mapping(header, active_fields())
        for item in mapping:
            column, _sep, target = item.partition("=")
            if column.strip() not in header:
                raise importer.ImportFailed(f"No column named {column.strip()!r} in the file.")
            targets[header.index(column.strip())] = target.strip()
        with importer.open_text(path) as stream:
            result = importer.import_clients(
                stream, list_name, basis, method=method, mapping=targets, source_name=path.name
            )
    except (importer.ImportFailed, MailingError, ValueError) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    elapsed = time.perf_counter() - started
    counts = result.as_dict()
    click.echo(
        f"{counts['rows']} rows: {counts['created']} new clients, {counts['matched']} matched "
        f"by email, {counts['subscribed']} subscribed to {result.list_name!r}"
        f"{' (new list)' if result.list_created else ''}, {counts['already']} already on it, "
        f"{counts['errors']} rows with problems ({elapsed:.1f} s)."
    )
    if report is not None:
        report.write_text(importer.error_report(result.errors), encoding="utf-8")
        click.echo(f"Error report written to {report}.")
    else:
        for error in result.errors[:50]:
            click.echo(f"row {error.row}, {error.column}: {error.message}", err=True)
        if len(result.errors) > 50:
            click.echo(f"... and {len(result.errors) - 50} more (use --report FILE).", err=True)
