"""The consent ledger: purposes (the Art. 30 register), versioned notices, insert-only
consent events, the current state per client and purpose, renewal links.

Database triggers (migration 0006) refuse UPDATE and DELETE on consent_events and
consent_notices: a row is evidence and is never rewritten. The one way events leave is
with their client (deleting a client cascades to its events; the delete trigger lets a
row through only once its client row is gone), so events cannot be removed on their own.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.sqltypes import JSONType, UTCDateTime, utcnow

if TYPE_CHECKING:
    from crm.auth.models import User


class LegalBasis(enum.StrEnum):
    """GDPR Art. 6(1), points (a) to (f)."""

    CONSENT = "a"
    CONTRACT = "b"
    LEGAL_OBLIGATION = "c"
    VITAL_INTERESTS = "d"
    PUBLIC_TASK = "e"
    LEGITIMATE_INTEREST = "f"


class RetentionAction(enum.StrEnum):
    """What happens when a client's data has outlived every purpose it was held for."""

    REVIEW = "review"  # a task for the owner: erase, or record why the data stays
    ANONYMISE = "anonymise"  # done automatically, and audited


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    POST = "post"


class EventKind(enum.StrEnum):
    GIVEN = "given"
    RENEWED = "renewed"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"


class Method(enum.StrEnum):
    WEB_FORM = "web_form"
    DOUBLE_OPT_IN = "double_opt_in"
    PHONE = "phone"
    IN_PERSON = "in_person"
    EMAIL = "email"
    IMPORT = "import"
    STAFF = "staff"
    SYSTEM = "system"  # recorded by the CRM itself (expiry)


class ConsentStatus(enum.StrEnum):
    """The state a client's last event left a purpose in ("renewed" leaves it given)."""

    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"


class ConsentPurpose(db.Model):
    """One processing purpose: a row of the Art. 30 record of processing activities."""

    __tablename__ = "consent_purposes"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stable name for code: may_contact(client, "newsletter", "email").
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    legal_basis: Mapped[str] = mapped_column(String(1))
    legitimate_interest: Mapped[str] = mapped_column(Text, default="")
    data_categories: Mapped[str] = mapped_column(Text, default="")
    recipients: Mapped[str] = mapped_column(Text, default="")
    channels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    retention_months: Mapped[int] = mapped_column(Integer)
    retention_action: Mapped[str] = mapped_column(String(12), default=RetentionAction.REVIEW.value)
    # None: the basis does not lapse with time (e.g. a contract); consent always lapses.
    validity_months: Mapped[int | None] = mapped_column(Integer)
    warning_days: Mapped[int] = mapped_column(Integer, default=30)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def is_consent(self) -> bool:
        return self.legal_basis == LegalBasis.CONSENT.value


class ConsentNotice(db.Model):
    """One version of a purpose's notice text in one language. Never changed: an edit
    adds the next version, and events keep pointing at the version they were given under."""

    __tablename__ = "consent_notices"
    __table_args__ = (
        UniqueConstraint("purpose_id", "language", "version", name="uq_consent_notices_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose_id: Mapped[int] = mapped_column(ForeignKey("consent_purposes.id"))
    language: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # sha256 of the text (UTF-8, as stored): shows that the text was not changed since.
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    purpose: Mapped[ConsentPurpose] = relationship()


class ConsentEvent(db.Model):
    """One consent event with its evidence. Insert-only (database triggers)."""

    __tablename__ = "consent_events"
    __table_args__ = (
        Index("ix_consent_events_client", "client_id", "id"),
        Index("ix_consent_events_client_purpose", "client_id", "purpose_id", "id"),
        {"sqlite_autoincrement": True},  # an id, once evidence, is never reused
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    purpose_id: Mapped[int] = mapped_column(ForeignKey("consent_purposes.id"))
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("consent_notices.id"))
    kind: Mapped[str] = mapped_column(String(12))
    method: Mapped[str] = mapped_column(String(16))
    # No ON DELETE: users are deactivated, never deleted, and an event is never updated.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # When it took effect (an expiry: the instant the consent ran out) and when the row
    # was written.
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Given and renewed: until when this consent counts (None: does not lapse).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_url: Mapped[str] = mapped_column(String(500), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    ip: Mapped[str] = mapped_column(String(45), default="")  # truncated (/24, /48)
    note: Mapped[str] = mapped_column(String(500), default="")

    purpose: Mapped[ConsentPurpose] = relationship()
    notice: Mapped[ConsentNotice | None] = relationship()
    actor: Mapped[User | None] = relationship()


class ConsentState(db.Model):
    """The current state per client and purpose: what the client's last event for the
    purpose left. Written in the same transaction as each event; `flask consents
    rebuild` derives it again from the events."""

    __tablename__ = "consent_states"
    __table_args__ = (
        UniqueConstraint("client_id", "purpose_id", name="uq_consent_states_client_purpose"),
        # The expiry sweep: valid consents by expiry time.
        Index("ix_consent_states_status_expiry", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    purpose_id: Mapped[int] = mapped_column(ForeignKey("consent_purposes.id"))
    status: Mapped[str] = mapped_column(String(12))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notice_id: Mapped[int | None] = mapped_column(Integer)
    # The given/renewed event the state rests on (None once it stopped counting): the
    # expiry warning task names it, so each consent is warned about once.
    basis_event_id: Mapped[int | None] = mapped_column(Integer)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the purpose stopped counting for this client: retention runs from here.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    purpose: Mapped[ConsentPurpose] = relationship()


class ConsentRenewal(db.Model):
    """A renewal request emailed to a client. Its signed link names this row, the client
    and the purpose; it works once (used_at) and until expires_at."""

    __tablename__ = "consent_renewals"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    purpose_id: Mapped[int] = mapped_column(ForeignKey("consent_purposes.id"))
    notice_id: Mapped[int] = mapped_column(ForeignKey("consent_notices.id"))
    nonce: Mapped[str] = mapped_column(String(32), unique=True)
    sent_to: Mapped[str] = mapped_column(String(254))
    sent_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event_id: Mapped[int | None] = mapped_column(Integer)

    purpose: Mapped[ConsentPurpose] = relationship()
    notice: Mapped[ConsentNotice] = relationship()


class AnonymisedClient(db.Model):
    """Clients anonymised by the retention job (so it never picks them again)."""

    __tablename__ = "anonymised_clients"

    client_id: Mapped[int] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    anonymised_at: Mapped[datetime] = mapped_column(UTCDateTime)
