"""Outgoing email: to files in instance/outbox/ (embedded default) or over SMTP.

CRM_SMTP_URL: smtp://user:pass@host:587 (STARTTLS when the server offers it) or
smtps://user:pass@host:465 (TLS from the start).
"""

from __future__ import annotations

import smtplib
import ssl
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flask import current_app

from crm.queue import actor


def build_message(to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = current_app.config["CRM_MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="crm.local")
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def deliver(message: EmailMessage) -> None:
    """Send now, through whichever transport the settings name."""
    url = current_app.config.get("CRM_SMTP_URL")
    if not url:
        outbox = Path(current_app.config["CRM_OUTBOX_DIR"])
        outbox.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = outbox / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(message))
        tmp.replace(path)  # a reader never sees half a message
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port
    context = ssl.create_default_context()
    if parts.scheme == "smtps":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, context=context, timeout=30)
    else:
        smtp = smtplib.SMTP(host, port or 25, timeout=30)
    with smtp:
        if parts.scheme != "smtps" and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(message)


@actor(max_retries=5, min_backoff=10_000)
def send_email(to: str, subject: str, text: str) -> None:
    """Plain notification email (task assigned, and later invitations, resets)."""
    deliver(build_message(to, subject, text))
