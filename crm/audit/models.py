"""Audit entries (append-only, hash-chained) and the grants that let pruning through."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db
from crm.sqltypes import JSONType, UTCDateTime, utcnow

GENESIS_HASH = "0" * 64


class AuditEntry(db.Model):
    """One event. Never updated or deleted: database triggers refuse both.

    client_id is deliberately not a foreign key, so an entry outlives the client it
    names; actor_email is copied for the same reason (actor_id goes NULL on delete).
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_created_at", "created_at"),
        Index("ix_audit_entries_client", "client_id", "id"),
        Index("ix_audit_entries_actor", "actor_id", "id"),
        Index("ix_audit_entries_action", "action", "id"),
        # Never reuse an id, even after pruning removed the newest rows.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_email: Mapped[str | None] = mapped_column(String(254))
    ip: Mapped[str | None] = mapped_column(String(45))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(Integer)
    client_id: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(db.Model):
    """Written by retention pruning: the hash of the last entry removed.

    Verification starts at the newest checkpoint: the first kept entry's prev_hash
    must equal `last_hash`. Checkpoints are themselves only ever added.
    """

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_removed_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
    removed_count: Mapped[int] = mapped_column(Integer)


class AuditPruneGrant(db.Model):
    """A row here lets the delete trigger through for entries with id <= upto_id.

    The prune command writes it and deletes it again in the same transaction, so a
    grant never outlives the prune that needed it.
    """

    __tablename__ = "audit_prune_grants"

    id: Mapped[int] = mapped_column(primary_key=True)
    upto_id: Mapped[int] = mapped_column(Integer)


class AuditRedactionGrant(db.Model):
    """A row here lets the update trigger change `details` (and clear `ip`) of the
    audit entry `entry_id`, every other column staying equal.

    Erasure writes the grants, redacts the entries and deletes the grants again in one
    transaction, and lists the redacted entries in its own entry (see
    crm.audit.services.redact_entries and verify_chain)."""

    __tablename__ = "audit_redaction_grants"

    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
