"""`flask --app crm export client ID --out FILE.zip` and
`flask --app crm erase client ID --yes`."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

export_cli = click.Group("export", help="Export one client's data (access, portability).")
erase_cli = click.Group("erase", help="Erase one client and everything about them.")


@export_cli.command("client")
@click.argument("client_id", type=int)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The zip file to write (replaced if it exists).",
)
@click.option("--by", "by_email", default=None, help="Email of the user answering the request.")
@with_appcontext
def export_client_command(client_id: int, out: Path, by_email: str | None) -> None:
    """Write one client's data (xlsx, .eml, files, JSON) to a zip file, now (no worker
    needed). Audited."""
    from flask_babel import force_locale
    from sqlalchemy import func, select

    from crm.audit.services import record
    from crm.auth.models import User
    from crm.clients.models import Client
    from crm.extensions import db
    from crm.org.services import organisation
    from crm.privacy.export import write_client_zip

    if db.session.get(Client, client_id) is None:
        raise click.ClickException(f"No client {client_id}.")
    by = None
    if by_email:
        by = db.session.scalar(select(User).where(func.lower(User.email) == by_email.lower()))
        if by is None:
            raise click.ClickException(f"No user {by_email}.")
    if out.exists() and out.is_dir():
        raise click.ClickException(f"{out} is a directory; name a .zip file.")
    target = out.resolve()
    try:
        with force_locale((by.locale if by else None) or organisation().default_locale or "en"):
            result = write_client_zip(client_id, target)
    except OSError as error:
        raise click.ClickException(f"Cannot write {out}: {error.strerror or error}") from error
    record(
        "privacy.export_cli",
        target_type="client",
        target_id=client_id,
        client_id=client_id,
        details={"file": target.name, "size": result.size, "counts": result.counts},
        actor=by,
    )
    db.session.commit()
    counts = ", ".join(f"{key} {n}" for key, n in result.counts.items() if n)
    click.echo(f"{target}: {result.size} bytes ({counts or 'no records beyond the card'})")


@erase_cli.command("client")
@click.argument("client_id", type=int)
@click.option("--yes", is_flag=True, help="Erase for good (without it: show what would go).")
@click.option(
    "--request", "request_id", type=int, default=None, help="The erasure request answered."
)
@click.option("--by", "by_email", default=None, help="Email of the user answering the request.")
@with_appcontext
def erase_client_command(
    client_id: int, yes: bool, request_id: int | None, by_email: str | None
) -> None:
    """Erase one client and everything about them (GDPR Art. 17); audit entries are
    redacted, the email and phone kept as keyed suppression hashes."""
    from sqlalchemy import func, select

    from crm.auth.models import User
    from crm.clients.models import Client
    from crm.extensions import db
    from crm.privacy.erasure import ErasureError, check_request, erase_client, erasure_counts

    client = db.session.get(Client, client_id)
    if client is None:
        raise click.ClickException(f"No client {client_id}.")
    by = None
    if by_email:
        by = db.session.scalar(select(User).where(func.lower(User.email) == by_email.lower()))
        if by is None:
            raise click.ClickException(f"No user {by_email}.")
    try:
        check_request(client, request_id)
    except ErasureError as error:
        raise click.ClickException(str(error)) from None
    counts = erasure_counts(client)
    kept = counts.pop("requests_kept")
    listed = ", ".join(f"{key} {n}" for key, n in counts.items() if n)
    if not yes:
        db.session.rollback()
        raise click.ClickException(
            f"Not erased: add --yes to erase client {client_id} for good. It would remove: "
            f"{listed}; and keep {kept} data request(s) without personal data, the "
            "redacted audit entries, an erasure record and the suppression hashes."
        )
    result = erase_client(client, by, request_id=request_id)
    db.session.commit()
    result.after_commit()
    click.echo(
        f"Client {client_id} erased (erasure record {result.erasure.id}): {listed}; "
        f"{result.redacted_audit_entries} audit entries redacted."
    )
