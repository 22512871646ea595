from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from crm.audit.services import record as audit
from crm.auth import twofactor
from crm.auth.models import User
from crm.auth.services import AccountError, create_user, ensure_shipped_roles, find_user
from crm.extensions import db

users_cli = click.Group("users", help="Manage user accounts.")


@users_cli.command("create")
@click.argument("email")
@click.option("--role", default="sales", show_default=True, help="admin, manager, sales, readonly")
@click.option("--name", default="", help="Full name shown in the app.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def create_command(email: str, role: str, name: str, password_stdin: bool) -> None:
    """Create a user. The password is asked for (twice) unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(email, password, role, full_name=name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"Created {user.email} with role {user.role.name}.")


@users_cli.command("list")
@with_appcontext
def list_command() -> None:
    """List users with their role and status."""
    ensure_shipped_roles()
    db.session.commit()
    for user in db.session.scalars(select(User).order_by(User.email)):
        status = "active" if user.active else "deactivated"
        click.echo(f"{user.email}\t{user.role.name}\t{status}")


@users_cli.command("reset-2fa")
@click.argument("email")
@with_appcontext
def reset_2fa_command(email: str) -> None:
    """Turn off EMAIL's two-factor authentication (lost phone) and sign them out
    everywhere; they set it up again from their account page, or at the next sign-in
    when their role requires it."""
    user = find_user(email)
    if user is None:
        raise click.ClickException(f"no user with the email {email.strip()}")
    was_enabled = twofactor.is_enabled(user)
    removed = twofactor.disable(user)
    audit(
        "2fa_reset",
        target_type="user",
        target_id=user.id,
        details={"by": "cli", "email": user.email, "recovery_codes_removed": removed},
    )
    db.session.commit()
    if was_enabled:
        click.echo(
            f"Two-factor authentication of {user.email} was reset: "
            f"{removed} unused recovery codes deleted, every session signed out."
        )
    else:
        click.echo(f"{user.email} had no two-factor authentication; every session was signed out.")
    if user.role.require_2fa:
        click.echo(f"Role {user.role.name} requires 2FA: it will be set up at the next sign-in.")
