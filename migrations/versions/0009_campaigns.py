"""campaigns: campaigns, one delivery row per recipient, the messages as sent, the
shared sending schedule; the foreign key from subscription events to campaigns

Revision ID: 0009_campaigns
Revises: 0008_mailing
Create Date: 2026-12-02 15:00:00

On SQLite a foreign key can only be added by rebuilding the table, which drops its
triggers: the insert-only triggers of mailing_subscription_events are created again
(the same statements as in 0008), and the rebuilt table keeps AUTOINCREMENT so event
ids are never reused.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_campaigns"
down_revision = "0008_mailing"
branch_labels = None
depends_on = None

SQLITE_EVENT_TRIGGERS = [
    """CREATE TRIGGER mailing_subscription_events_no_update
    BEFORE UPDATE ON mailing_subscription_events
    BEGIN SELECT RAISE(ABORT, 'subscription events are insert-only'); END""",
    """CREATE TRIGGER mailing_subscription_events_no_delete
    BEFORE DELETE ON mailing_subscription_events
    WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id)
    BEGIN SELECT RAISE(ABORT, 'subscription events are insert-only'); END""",
]

EVENTS_FK = "fk_mailing_subscription_events_campaign_id_campaigns"


def upgrade():
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("sender_name", sa.String(length=120), nullable=False),
        sa.Column("sender_email", sa.String(length=254), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_format", sa.String(length=10), nullable=False),
        sa.Column("list_ids", sa.JSON(), nullable=False),
        sa.Column("saved_filter_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("progress_at", sa.DateTime(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("sent_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_campaigns_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["saved_filter_id"],
            ["saved_filters.id"],
            name=op.f("fk_campaigns_saved_filter_id_saved_filters"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sent_by_id"], ["users.id"], name=op.f("fk_campaigns_sent_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(
        "ix_campaigns_status_scheduled", "campaigns", ["status", "scheduled_at"], unique=False
    )

    op.create_table(
        "campaign_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_answer", sa.String(length=500), nullable=False),
        sa.Column("claimed_by", sa.String(length=120), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("skip_reason", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_deliveries_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_campaign_deliveries_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name=op.f("fk_campaign_deliveries_list_id_mailing_lists"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_deliveries")),
        sa.UniqueConstraint("campaign_id", "client_id", name="uq_campaign_deliveries_client"),
    )
    op.create_index(
        "ix_campaign_deliveries_claim",
        "campaign_deliveries",
        ["campaign_id", "status", "next_attempt_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_campaign_deliveries_claimed",
        "campaign_deliveries",
        ["status", "claimed_at"],
        unique=False,
    )
    op.create_index(
        "ix_campaign_deliveries_client", "campaign_deliveries", ["client_id"], unique=False
    )

    op.create_table(
        "sent_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_sent_messages_campaign_id_campaigns"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_sent_messages_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_messages")),
    )
    op.create_index(
        op.f("ix_sent_messages_campaign_id"), "sent_messages", ["campaign_id"], unique=False
    )
    op.create_index(
        "ix_sent_messages_client_sent",
        "sent_messages",
        ["client_id", "sent_at", "id"],
        unique=False,
    )

    op.create_table(
        "mail_rate_limits",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mail_rate_limits")),
    )
    op.execute("INSERT INTO mail_rate_limits (name, next_at) VALUES ('campaigns', 0)")

    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table(
            "mailing_subscription_events",
            recreate="always",
            table_kwargs={"sqlite_autoincrement": True},
        ) as batch_op:
            batch_op.create_foreign_key(EVENTS_FK, "campaigns", ["campaign_id"], ["id"])
        for statement in SQLITE_EVENT_TRIGGERS:
            op.execute(statement)
    else:
        op.create_foreign_key(
            EVENTS_FK, "mailing_subscription_events", "campaigns", ["campaign_id"], ["id"]
        )


def downgrade():
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table(
            "mailing_subscription_events",
            recreate="always",
            table_kwargs={"sqlite_autoincrement": True},
        ) as batch_op:
            batch_op.drop_constraint(EVENTS_FK, type_="foreignkey")
        for statement in SQLITE_EVENT_TRIGGERS:
            op.execute(statement)
    else:
        op.drop_constraint(EVENTS_FK, "mailing_subscription_events", type_="foreignkey")
    op.drop_table("mail_rate_limits")
    op.drop_index("ix_sent_messages_client_sent", table_name="sent_messages")
    op.drop_index(op.f("ix_sent_messages_campaign_id"), table_name="sent_messages")
    op.drop_table("sent_messages")
    op.drop_index("ix_campaign_deliveries_client", table_name="campaign_deliveries")
    op.drop_index("ix_campaign_deliveries_claimed", table_name="campaign_deliveries")
    op.drop_index("ix_campaign_deliveries_claim", table_name="campaign_deliveries")
    op.drop_table("campaign_deliveries")
    op.drop_index("ix_campaigns_status_scheduled", table_name="campaigns")
    op.drop_table("campaigns")
