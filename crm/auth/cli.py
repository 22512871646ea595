from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from crm.auth.models import User
from crm.auth.services import AccountError, create_user, ensure_shipped_roles
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
