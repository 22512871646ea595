"""`flask --app crm appointments …`: the services and their free times, from a shell."""

from __future__ import annotations

from datetime import date, timedelta

import click
from flask.cli import with_appcontext

from crm.appointments import services
from crm.extensions import db

appointments_cli = click.Group("appointments", help="The appointment book.")


@appointments_cli.command("services")
@with_appcontext
def services_command() -> None:
    """The services: id, name, length, seats, who offers them."""
    for service in services.all_services():
        staff = ", ".join(u.display_name for u in service.staff) or "nobody"
        state = " (archived)" if service.archived else ""
        click.echo(
            f"{service.id}\t{service.name}{state}\t{service.duration_minutes} min"
            f"\t{service.capacity} seat(s)\t{staff}"
        )


@appointments_cli.command("slots")
@click.argument("service_id", type=int)
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), help="First date (today).")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366))
@click.option("--staff", "staff_id", type=int, help="One staff member's id (default: anyone).")
@click.option("--online", is_flag=True, help="Apply the booking window, as online booking does.")
@with_appcontext
def slots_command(
    service_id: int, first: date | None, days: int, staff_id: int | None, online: bool
) -> None:
    """Free start times of a service, in the organisation's time zone."""
    service = services.get_service(service_id)
    if service is None:
        raise click.ClickException(f"no service with id {service_id}")
    start = first.date() if first else services.local_today()
    found = services.slots_for(
        service,
        start,
        start + timedelta(days=days - 1),
        staff_ids=[staff_id] if staff_id is not None else None,
        honour_window=online,
    )
    names = {u.id: u.display_name for u in service.staff}
    zone = services.org_zone()
    for slot in found:
        local = slot.starts_at.astimezone(zone)
        click.echo(
            f"{local:%Y-%m-%d %H:%M %Z}\t{names.get(slot.staff_id, slot.staff_id)}"
            f"\t{slot.seats_left} seat(s) left"
        )
    click.echo(f"{len(found)} free time(s).", err=True)
    db.session.rollback()
