"""`flask sms …`: check the SMS settings by sending a real message."""

from __future__ import annotations

import click
import phonenumbers
from flask import current_app
from flask.cli import with_appcontext

from crm import sms

sms_cli = click.Group("sms", help="Check the SMS gateway.")


def _describe_backend() -> str:
    config = current_app.config
    if not config.get("CRM_SMS_URL"):
        return f"outbox (files in {config['CRM_OUTBOX_DIR']}; set CRM_SMS_URL for a gateway)"
    gateway = sms.HttpGateway.from_config(config)
    auth = (
        f"header {gateway.auth_header_name}: ***" if gateway.auth_header_name else "no auth header"
    )
    return f"HTTP gateway {gateway.where} ({auth}, {gateway.template.content_type} body)"


@sms_cli.command("test")
@click.argument("number")
@click.option("--text", default=None, help="The message (default: a short test message).")
@click.option("--sender", default=None, help="Sender name or number (default: CRM_SMS_SENDER).")
@with_appcontext
def test_command(number: str, text: str | None, sender: str | None) -> None:
    """Send one SMS to NUMBER and print what the gateway answered."""
    from crm.org.services import organisation

    try:
        click.echo(f"Backend: {_describe_backend()}")
        if text is None:
            text = f"{organisation().name}: a test message from the CRM. No reply needed."
        message = sms.SmsMessage(to=number, body=text, sender=sender)
        prepared = sms.prepare(message)
        shown = phonenumbers.format_number(
            phonenumbers.parse(prepared.to), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        length = prepared.length
        click.echo(f"To: {shown} ({prepared.to})")
        click.echo(f"From: {prepared.sender or 'the gateway default sender'}")
        click.echo(
            f"Text: {length.characters} characters, {length.encoding}, "
            f"{length.segments} SMS ({length.remaining} units left in the last one)"
        )
        result = sms.send_sms(message)
    except sms.SmsError as exc:
        raise click.ClickException(str(exc)) from None
    if result.path is not None:
        click.echo(f"Written to {result.path}")
        return
    provider = f", gateway id {result.provider_id}" if result.provider_id else ""
    click.echo(
        f"Sent: HTTP {result.status} after {result.attempts} attempt(s){provider}; "
        f"reference {result.reference}"
    )
