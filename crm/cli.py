"""Operator commands that span domains: demo data, first-run set-up, the server."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select

from crm.extensions import db


@click.command("demo")
@click.option("--clients", "count", default=500, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=7, show_default=True, help="Random seed, for repeatable data.")
@with_appcontext
def demo_command(count: int, seed: int) -> None:
    """Fill the database with demo clients (Polish, German and Czech), custom fields,
    notes, tasks and deals."""
    from crm.demo import fill_demo

    stats = fill_demo(count, seed=seed)
    click.echo(", ".join(f"{v} {k}" for k, v in stats.items()))


@click.command("bootstrap")
@click.option("--demo-clients", default=300, show_default=True, type=click.IntRange(0))
@with_appcontext
def bootstrap_command(demo_clients: int) -> None:
    """First run: create an admin with a generated password and fill demo data.
    Does nothing on later runs except remind where the login is."""
    from crm.auth.models import User
    from crm.auth.services import create_user, ensure_shipped_roles, generate_password
    from crm.clients.models import Client

    ensure_shipped_roles()
    note = Path(current_app.instance_path) / "first-admin.txt"
    if db.session.scalar(select(func.count()).select_from(User)) == 0:
        password = generate_password()
        create_user("admin@example.com", password, "admin", full_name="Admin")
        db.session.commit()
        note.write_text(f"email: admin@example.com\npassword: {password}\n")
        note.chmod(0o600)
        if not db.session.scalar(select(func.count()).select_from(Client)) and demo_clients:
            from crm.demo import fill_demo

            fill_demo(demo_clients)
        click.echo("First run: created the admin account and demo data.")
    db.session.commit()
    if note.exists():
        click.echo("Sign in with (saved in instance/first-admin.txt):")
        for line in note.read_text().splitlines():
            click.echo(f"  {line}")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@with_appcontext
def serve_command(host: str, port: int, threads: int) -> None:
    """Serve the app with waitress, plus in-process workers when no broker is set."""
    from waitress import serve

    from crm.queue import start_embedded_workers
    from crm.scheduler.runner import start_embedded_scheduler

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    worker = start_embedded_workers(app)
    # Embedded mode also runs the periodic jobs in a thread (production: `jobs scheduler`).
    scheduler = start_embedded_scheduler(app) if worker else None
    mode = (
        "in-process workers and scheduler"
        if worker
        else "workers: run `dramatiq crm.queue`; periodic jobs: `flask jobs scheduler`"
    )
    mail = app.config.get("CRM_SMTP_URL") or f"files in {app.config['CRM_OUTBOX_DIR']}"
    click.echo(f"CRM on http://{host}:{port}  ({mode}; email to {mail})")
    from crm import settle_heap

    settle_heap()
    try:
        serve(app, host=host, port=port, threads=threads, ident="crm")
    finally:
        if scheduler is not None:
            scheduler.stop()
        if worker is not None:
            worker.stop()
