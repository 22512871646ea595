"""`flask --app crm campaigns create|send|status`: campaigns for operators."""

from __future__ import annotations

import time
from email.utils import parseaddr
from pathlib import Path

import click
from dramatiq.brokers.stub import StubBroker
from flask import current_app
from flask.cli import with_appcontext

from crm import queue
from crm.campaigns import services
from crm.campaigns.content import ContentError
from crm.campaigns.models import BodyFormat, Campaign, CampaignStatus
from crm.extensions import db
from crm.mailing.services import find_list

campaigns_cli = click.Group("campaigns", help="Email campaigns.")


def _campaign(campaign_id: int) -> Campaign:
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise click.ClickException(f"No campaign {campaign_id}.")
    return campaign


def _print_status(campaign: Campaign) -> None:
    stats = services.campaign_stats(campaign.id)
    click.echo(
        f"campaign {campaign.id}: {campaign.status}; {stats.recipients} recipients, "
        f"{stats.sent} sent, {stats.pending + stats.sending} waiting, {stats.failed} failed, "
        f"{stats.skipped} skipped, {stats.unsubscribes} unsubscribed"
    )


@campaigns_cli.command("create")
@click.option("--list", "list_names", multiple=True, required=True, help="List name (repeatable).")
@click.option("--subject", required=True)
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option(
    "--format",
    "body_format",
    type=click.Choice(["markdown", "html"]),
    default=None,
    help="Default: html for .html files, else markdown.",
)
@click.option("--sender", default=None, help='"Name <address>"; default CRM_MAIL_FROM.')
@click.option("--name", default="", help="Internal name.")
@with_appcontext
def create_command(
    list_names: tuple[str, ...],
    subject: str,
    body_file: str,
    body_format: str | None,
    sender: str | None,
    name: str,
) -> None:
    """Create a draft campaign to the subscribers of one or more lists."""
    lists = []
    for list_name in list_names:
        found = find_list(list_name)
        if found is None:
            raise click.ClickException(f"No list named {list_name!r}.")
        lists.append(found.id)
    path = Path(body_file)
    fmt = body_format or (
        BodyFormat.HTML.value if path.suffix.lower() in {".html", ".htm"} else "markdown"
    )
    sender_name, sender_email = parseaddr(sender or current_app.config.get("CRM_MAIL_FROM") or "")
    spec = services.CampaignSpec(
        name=name,
        subject=subject,
        sender_name=sender_name,
        sender_email=sender_email,
        body=path.read_text(encoding="utf-8"),
        body_format=fmt,
        list_ids=lists,
    )
    problems = services.check_spec(spec)
    if not sender_email:
        problems["sender_email"] = "A sender address is needed (--sender or CRM_MAIL_FROM)."
    if problems:
        raise click.ClickException("; ".join(problems.values()))
    campaign = services.create_campaign(spec, None)
    db.session.commit()
    click.echo(f"Created campaign {campaign.id} (draft).")


@campaigns_cli.command("send")
@click.argument("campaign_id", type=int)
@click.option("--wait", is_flag=True, help="Wait until every recipient was handled.")
@with_appcontext
def send_command(campaign_id: int, wait: bool) -> None:
    """Resolve the audience and start sending CAMPAIGN_ID."""
    campaign = _campaign(campaign_id)
    try:
        services.take_write_lock()
        count = services.start_sending(campaign, campaign.sent_by or campaign.created_by)
    except services.CampaignError as error:
        raise click.ClickException(str(error)) from error
    db.session.commit()
    click.echo(f"Sending campaign {campaign_id} to {count} recipients.")
    embedded = isinstance(queue.broker, StubBroker)
    if embedded:
        # No worker processes: this process sends (a message left in its in-memory
        # broker would be gone when it exits).
        queue.broker.flush_all()
        result = ""
        while result not in {"done", "not sending"} and not result.startswith("stopped"):
            try:
                result = services.work_on_campaign(campaign_id)
            except ContentError as error:
                raise click.ClickException(str(error)) from error
            if result == "waiting for retries":
                queue.broker.flush_all()
                time.sleep(1)
                if not wait:
                    click.echo("Some messages wait for a retry; the scheduler resumes them.")
                    break
    elif wait:
        while True:
            db.session.expire_all()
            status = _campaign(campaign_id).status
            db.session.commit()
            if status != CampaignStatus.SENDING:
                break
            time.sleep(1)
    _print_status(_campaign(campaign_id))


@campaigns_cli.command("status")
@click.argument("campaign_id", type=int)
@with_appcontext
def status_command(campaign_id: int) -> None:
    """Show how far CAMPAIGN_ID is."""
    _print_status(_campaign(campaign_id))
