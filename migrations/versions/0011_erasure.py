"""erasure: audit redaction under a grant, keyed (salted) suppression of emails and
phones

Revision ID: 0011_erasure
Revises: 0010_privacy
Create Date: 2026-12-02 17:30:00

Audit redaction. `audit_redaction_grants` names entries whose `details` may be
rewritten (and `ip` cleared); the update trigger of audit_entries lets such an update
through only while the grant exists and every other column stays equal. Erasure
writes the grants, redacts and deletes the grants in one transaction, and lists the
redacted entries in its own (hash-chained) entry, which `audit verify` reads.

Suppression. Until now an entry was the plain SHA-256 of the normalised address: anyone
with a copy of the table could test guessed addresses against it. Entries are now an
HMAC-SHA256 under a random per-installation key stored in `mailing_suppression_keys`
(made here; not derived from CRM_SECRET_KEY, which may rotate), for email addresses
and phone numbers (`kind`). Existing entries cannot be re-keyed without the address
they came from, so:
- an entry whose address is still on a client card is re-keyed here (the address is
  known, nothing is lost);
- every other entry (erased or bounced addresses no longer on any card) stays as it
  was, marked `scheme = 'sha256'`, and the checks test both forms of an address, so
  it keeps suppressing. No new entry is ever written in the old form.
Downgrade: phone entries are removed (the old code has no notion of them); keyed email
entries stay but the old code cannot match them, so those addresses are no longer
suppressed after a downgrade (nor after upgrading again: the key is made anew).
Re-keyed entries are not turned back.
"""

import hashlib
import secrets
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0011_erasure"
down_revision = "0010_privacy"
branch_labels = None
depends_on = None

AUDIT_COLUMNS_KEPT = (
    "id",
    "created_at",
    "actor_id",
    "actor_email",
    "action",
    "target_type",
    "target_id",
    "client_id",
    "prev_hash",
    "entry_hash",
)

SQLITE_OLD_UPDATE_TRIGGER = """CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"""

SQLITE_UPDATE_TRIGGER = (
    """CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    WHEN NOT (EXISTS (SELECT 1 FROM audit_redaction_grants WHERE entry_id = OLD.id)
        AND """
    + " AND ".join(f"NEW.{c} IS OLD.{c}" for c in AUDIT_COLUMNS_KEPT)
    + """ AND (NEW.ip IS OLD.ip OR NEW.ip IS NULL))
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"""
)

POSTGRES_OLD_FUNCTION = """CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_entries' AND EXISTS (
            SELECT 1 FROM audit_prune_grants WHERE upto_id >= OLD.id
        ) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '% are append-only', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$"""

# Nested IFs: plpgsql does not short-circuit AND, and audit_checkpoints shares the
# function but has none of these columns.
POSTGRES_FUNCTION = (
    """CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_entries' AND EXISTS (
            SELECT 1 FROM audit_prune_grants WHERE upto_id >= OLD.id
        ) THEN
            RETURN OLD;
        END IF;
        IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_entries' THEN
            IF EXISTS (SELECT 1 FROM audit_redaction_grants WHERE entry_id = OLD.id) THEN
                IF """
    + " AND ".join(f"NEW.{c} IS NOT DISTINCT FROM OLD.{c}" for c in AUDIT_COLUMNS_KEPT)
    + """ AND (NEW.ip IS NOT DISTINCT FROM OLD.ip OR NEW.ip IS NULL) THEN
                    RETURN NEW;
                END IF;
            END IF;
        END IF;
        RAISE EXCEPTION '% are append-only', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$"""
)


def _normalise_email(email):
    return unicodedata.normalize("NFC", (email or "").strip()).lower()


def _rekey_known_addresses(connection, secret):
    """Re-key the legacy entries whose address is still on a client card."""
    import hmac

    suppressions = sa.table(
        "mailing_suppressions",
        sa.column("id"),
        sa.column("email_hash"),
        sa.column("scheme"),
    )
    legacy = dict(
        connection.execute(
            sa.select(suppressions.c.email_hash, suppressions.c.id).where(
                suppressions.c.scheme == "sha256"
            )
        ).all()
    )
    if not legacy:
        return
    clients = sa.table("clients", sa.column("email"))
    # Streamed (statement option only: Connection.execution_options would stream every
    # later statement of the migration too).
    rows = connection.execute(
        sa.select(clients.c.email)
        .where(clients.c.email != "")
        .execution_options(stream_results=True, yield_per=1000)
    )
    key = secret.encode("utf-8")
    updates = {}
    for (email,) in rows:
        normal = _normalise_email(email)
        old = hashlib.sha256(normal.encode("utf-8")).hexdigest()
        if old in legacy and legacy[old] not in updates:
            new = hmac.new(key, b"email:" + normal.encode("utf-8"), hashlib.sha256).hexdigest()
            updates[legacy[old]] = new
    for entry_id, digest in updates.items():
        connection.execute(
            suppressions.update()
            .where(suppressions.c.id == entry_id)
            .values(email_hash=digest, scheme="hmac")
        )


def upgrade():
    connection = op.get_bind()
    dialect = connection.dialect.name

    op.create_table(
        "audit_redaction_grants",
        sa.Column("entry_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_audit_redaction_grants")),
    )
    if dialect == "postgresql":
        op.execute(POSTGRES_FUNCTION)
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
        op.execute(SQLITE_UPDATE_TRIGGER)

    op.create_table(
        "mailing_suppression_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing_suppression_keys")),
    )
    secret = secrets.token_hex(32)
    keys = sa.table(
        "mailing_suppression_keys",
        sa.column("id"),
        sa.column("secret"),
        sa.column("created_at", sa.DateTime()),
    )
    connection.execute(
        keys.insert().values(id=1, secret=secret, created_at=sa.func.current_timestamp())
    )
    # Plain ADD COLUMN (no table rebuild on SQLite; no rewrite on PostgreSQL). The
    # server defaults describe the rows that exist now: email addresses, plain SHA-256.
    op.add_column(
        "mailing_suppressions",
        sa.Column("kind", sa.String(length=8), nullable=False, server_default="email"),
    )
    op.add_column(
        "mailing_suppressions",
        sa.Column("scheme", sa.String(length=8), nullable=False, server_default="sha256"),
    )
    _rekey_known_addresses(connection, secret)


def downgrade():
    dialect = op.get_bind().dialect.name
    op.execute("DELETE FROM mailing_suppressions WHERE kind = 'phone'")
    # Native DROP COLUMN: no batch rebuild of the table.
    for column in ("scheme", "kind"):
        op.execute(f"ALTER TABLE mailing_suppressions DROP COLUMN {column}")
    op.drop_table("mailing_suppression_keys")

    if dialect == "postgresql":
        op.execute(POSTGRES_OLD_FUNCTION)
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
        op.execute(SQLITE_OLD_UPDATE_TRIGGER)
    op.drop_table("audit_redaction_grants")
