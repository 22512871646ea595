from __future__ import annotations

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db


class Organisation(db.Model):
    """The data controller this installation serves: one row."""

    __tablename__ = "organisation"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="My business")
    legal_name: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(Text)
    privacy_contact: Mapped[str | None] = mapped_column(String(254))
    # Recipients and processors of personal data (hosting, email delivery, accounting),
    # one per line: the data export's Art. 15(1)(c) information.
    recipients: Mapped[str] = mapped_column(Text, default="")
    default_phone_region: Mapped[str] = mapped_column(String(2), default="PL")
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Warsaw")
    default_currency: Mapped[str] = mapped_column(String(3), default="PLN")
    default_locale: Mapped[str] = mapped_column(String(8), default="en")
    languages: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["en", "pl", "de", "cs"])
    # The full privacy notice the short information clauses link to; empty: the
    # generated page at /privacy.
    privacy_notice_url: Mapped[str] = mapped_column(String(500), default="")
    # What staff calendar feeds show of a client (crm.appointments.models.FeedDetail).
    calendar_feed_detail: Mapped[str] = mapped_column(String(16), default="booked")


class SettingsGeneration(db.Model):
    """One row whose token changes (database triggers) with every write to the settings
    tables that every request reads: organisation, allowed_networks, custom_fields,
    deal_stages. Processes keep copies of those tables and reload them when the token
    differs (crm.org.services.shared)."""

    __tablename__ = "settings_generation"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
