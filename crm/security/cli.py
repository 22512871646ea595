"""`flask allowlist …`: read and repair the IP allow-list, e.g. after a lock-out."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from crm.auth.models import Role
from crm.extensions import db
from crm.security import services

allowlist_cli = click.Group("allowlist", help="Manage the IP allow-list.")


def _role(name: str | None) -> Role | None:
    if not name:
        return None
    try:
        return services.find_role(name)
    except services.NetworkError as exc:
        raise click.ClickException(str(exc)) from None


def _where(role: Role | None) -> str:
    return f"the list of role {role.name}" if role is not None else "the global list"


@allowlist_cli.command("list")
@with_appcontext
def list_command() -> None:
    """List the allowed ranges: global ones, then per role."""
    networks = services.list_networks()
    if not networks:
        click.echo("The allow-list is empty: every address is allowed.")
        return
    for net in networks:
        scope = f"role:{net.role.name}" if net.role is not None else "global"
        click.echo(f"{net.cidr}\t{scope}\t{net.note}".rstrip())


@allowlist_cli.command("add")
@click.argument("cidr")
@click.option("--role", "role_name", default=None, help="Limit this role (default: global).")
@click.option("--note", default="", help="Why this range is allowed.")
@with_appcontext
def add_command(cidr: str, role_name: str | None, note: str) -> None:
    """Allow CIDR (a range such as 192.0.2.0/24, or one address)."""
    role = _role(role_name)
    try:
        row = services.add_network(cidr, role, note)
    except services.NetworkError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"Added {row.cidr} to {_where(role)}.")


@allowlist_cli.command("remove")
@click.argument("cidr")
@click.option("--role", "role_name", default=None, help="Remove from this role's list.")
@with_appcontext
def remove_command(cidr: str, role_name: str | None) -> None:
    """Remove CIDR from the global list (or from --role's list)."""
    role = _role(role_name)
    try:
        normalised = str(services.parse_network(cidr))
    except services.NetworkError as exc:
        raise click.ClickException(str(exc)) from None
    row = services.find_network(normalised, role.id if role is not None else None)
    if row is None:
        raise click.ClickException(f"{normalised} is not in {_where(role)}.")
    services.remove_network(row)
    db.session.commit()
    click.echo(f"Removed {normalised} from {_where(role)}.")
