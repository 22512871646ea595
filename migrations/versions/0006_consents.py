"""consent ledger: purposes, versioned notices, insert-only consent events, the state
per client and purpose, renewal requests, anonymised clients; the periodic-job
scheduler's lease and run records

Revision ID: 0006_consents
Revises: 0005_settings_generation
Create Date: 2026-11-22 06:20:00

Triggers refuse UPDATE and DELETE (and on PostgreSQL TRUNCATE) on consent_events and
consent_notices: events and notice versions are evidence. One delete gets through: an
event whose client row is gone, i.e. the cascade when a client is deleted (erasure),
so events cannot be removed on their own but never keep a deleted client alive.
Triggers are not compared by the models-vs-migrations test; tables are.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0006_consents"
down_revision = "0005_settings_generation"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = [
    """CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are insert-only'); END""",
    """CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events
    WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id)
    BEGIN SELECT RAISE(ABORT, 'consent events are insert-only'); END""",
    """CREATE TRIGGER consent_notices_no_update BEFORE UPDATE ON consent_notices
    BEGIN SELECT RAISE(ABORT, 'consent notices are insert-only'); END""",
    """CREATE TRIGGER consent_notices_no_delete BEFORE DELETE ON consent_notices
    BEGIN SELECT RAISE(ABORT, 'consent notices are insert-only'); END""",
]

POSTGRES_TRIGGERS = [
    """CREATE FUNCTION consent_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- The cascade of a client's deletion: its row is gone by now. (Nested IFs:
        -- plpgsql does not short-circuit AND, and only consent_events has client_id.)
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'consent_events' THEN
            IF NOT EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION '% are insert-only', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$""",
] + [
    f"""CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table}
    FOR EACH {"STATEMENT" if event == "TRUNCATE" else "ROW"} EXECUTE FUNCTION consent_insert_only()"""
    for table in ("consent_events", "consent_notices")
    for event in ("UPDATE", "DELETE", "TRUNCATE")
]


def upgrade():
    op.create_table(
        "consent_purposes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.String(length=1), nullable=False),
        sa.Column("legitimate_interest", sa.Text(), nullable=False),
        sa.Column("data_categories", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("retention_months", sa.Integer(), nullable=False),
        sa.Column("retention_action", sa.String(length=12), nullable=False),
        sa.Column("validity_months", sa.Integer(), nullable=True),
        sa.Column("warning_days", sa.Integer(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_purposes")),
        sa.UniqueConstraint("key", name=op.f("uq_consent_purposes_key")),
    )
    op.create_table(
        "periodic_job_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_started_at", sa.DateTime(), nullable=True),
        sa.Column("last_finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_ok", sa.Boolean(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column(
            "last_stats",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_periodic_job_runs")),
    )
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_leases")),
    )
    op.create_table(
        "consent_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purpose_id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_consent_notices_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["purpose_id"],
            ["consent_purposes.id"],
            name=op.f("fk_consent_notices_purpose_id_consent_purposes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_notices")),
        sa.UniqueConstraint("purpose_id", "language", "version", name="uq_consent_notices_version"),
    )
    op.create_table(
        "anonymised_clients",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("anonymised_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_anonymised_clients_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_anonymised_clients")),
    )
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("purpose_id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("source_url", sa.String(length=500), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_consent_events_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_consent_events_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["consent_notices.id"],
            name=op.f("fk_consent_events_notice_id_consent_notices"),
        ),
        sa.ForeignKeyConstraint(
            ["purpose_id"],
            ["consent_purposes.id"],
            name=op.f("fk_consent_events_purpose_id_consent_purposes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index("ix_consent_events_client", ["client_id", "id"], unique=False)
        batch_op.create_index(
            "ix_consent_events_client_purpose", ["client_id", "purpose_id", "id"], unique=False
        )

    op.create_table(
        "consent_renewals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("purpose_id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("sent_to", sa.String(length=254), nullable=False),
        sa.Column("sent_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_consent_renewals_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["consent_notices.id"],
            name=op.f("fk_consent_renewals_notice_id_consent_notices"),
        ),
        sa.ForeignKeyConstraint(
            ["purpose_id"],
            ["consent_purposes.id"],
            name=op.f("fk_consent_renewals_purpose_id_consent_purposes"),
        ),
        sa.ForeignKeyConstraint(
            ["sent_by_id"], ["users.id"], name=op.f("fk_consent_renewals_sent_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_renewals")),
        sa.UniqueConstraint("nonce", name=op.f("uq_consent_renewals_nonce")),
    )
    with op.batch_alter_table("consent_renewals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_renewals_client_id"), ["client_id"], unique=False
        )

    op.create_table(
        "consent_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("purpose_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("notice_id", sa.Integer(), nullable=True),
        sa.Column("basis_event_id", sa.Integer(), nullable=True),
        sa.Column("warned_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_consent_states_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["purpose_id"],
            ["consent_purposes.id"],
            name=op.f("fk_consent_states_purpose_id_consent_purposes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_states")),
        sa.UniqueConstraint("client_id", "purpose_id", name="uq_consent_states_client_purpose"),
    )
    with op.batch_alter_table("consent_states", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_states_status_expiry", ["status", "expires_at"], unique=False
        )

    # The lease row the schedulers compete for (see crm/scheduler/runner.py).
    op.execute(
        "INSERT INTO scheduler_leases (name, holder, expires_at)"
        " VALUES ('scheduler', '', '1970-01-01 00:00:00')"
    )
    dialect = op.get_bind().dialect.name
    for statement in POSTGRES_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS consent_insert_only() CASCADE")
    else:
        for name in (
            "consent_events_no_update",
            "consent_events_no_delete",
            "consent_notices_no_update",
            "consent_notices_no_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("consent_states", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_states_status_expiry")

    op.drop_table("consent_states")
    with op.batch_alter_table("consent_renewals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_renewals_client_id"))

    op.drop_table("consent_renewals")
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_events_client_purpose")
        batch_op.drop_index("ix_consent_events_client")

    op.drop_table("consent_events")
    op.drop_table("anonymised_clients")
    op.drop_table("consent_notices")
    op.drop_table("scheduler_leases")
    op.drop_table("periodic_job_runs")
    op.drop_table("consent_purposes")
