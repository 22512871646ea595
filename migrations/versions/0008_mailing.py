"""mailing lists: list groups, lists, subscriptions, insert-only subscription events,
suppression entries (hashed addresses)

Revision ID: 0008_mailing
Revises: 0007_saved_filters
Create Date: 2026-12-02 14:15:30

Triggers refuse UPDATE and DELETE (and on PostgreSQL TRUNCATE) on
mailing_subscription_events, letting a delete through only once the client row is
gone (the cascade of deleting the client), as for consent events.
`mailing_subscription_events.campaign_id` has no foreign key yet: the campaigns table
comes with the next migration, which adds it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_mailing"
down_revision = "0007_saved_filters"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = [
    """CREATE TRIGGER mailing_subscription_events_no_update
    BEFORE UPDATE ON mailing_subscription_events
    BEGIN SELECT RAISE(ABORT, 'subscription events are insert-only'); END""",
    """CREATE TRIGGER mailing_subscription_events_no_delete
    BEFORE DELETE ON mailing_subscription_events
    WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id)
    BEGIN SELECT RAISE(ABORT, 'subscription events are insert-only'); END""",
]

POSTGRES_TRIGGERS = [
    """CREATE FUNCTION mailing_events_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF NOT EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION '% are insert-only', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$""",
] + [
    f"""CREATE TRIGGER mailing_subscription_events_no_{event.lower()}
    BEFORE {event} ON mailing_subscription_events
    FOR EACH {"STATEMENT" if event == "TRUNCATE" else "ROW"}
    EXECUTE FUNCTION mailing_events_insert_only()"""
    for event in ("UPDATE", "DELETE", "TRUNCATE")
]


def upgrade():
    op.create_table(
        "mailing_list_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing_list_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_mailing_list_groups_name")),
    )
    op.create_table(
        "mailing_suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing_suppressions")),
        sa.UniqueConstraint("email_hash", name=op.f("uq_mailing_suppressions_email_hash")),
    )
    op.create_table(
        "mailing_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("opt_in", sa.String(length=8), nullable=False),
        sa.Column("purpose_id", sa.Integer(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["mailing_list_groups.id"],
            name=op.f("fk_mailing_lists_group_id_mailing_list_groups"),
        ),
        sa.ForeignKeyConstraint(
            ["purpose_id"],
            ["consent_purposes.id"],
            name=op.f("fk_mailing_lists_purpose_id_consent_purposes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing_lists")),
        sa.UniqueConstraint("name", name=op.f("uq_mailing_lists_name")),
    )
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailing_lists_group_id"), ["group_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_mailing_lists_purpose_id"), ["purpose_id"], unique=False
        )

    op.create_table(
        "mailing_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("confirm_nonce", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_mailing_subscriptions_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name=op.f("fk_mailing_subscriptions_list_id_mailing_lists"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing_subscriptions")),
        sa.UniqueConstraint("client_id", "list_id", name="uq_mailing_subscriptions_client_list"),
    )
    with op.batch_alter_table("mailing_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mailing_subscriptions_list_status", ["list_id", "status", "client_id"], unique=False
        )

    op.create_table(
        "mailing_subscription_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("old_status", sa.String(length=12), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("consent_event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_mailing_subscription_events_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_mailing_subscription_events_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name=op.f("fk_mailing_subscription_events_list_id_mailing_lists"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["mailing_subscriptions.id"],
            name=op.f("fk_mailing_subscription_events_subscription_id_mailing_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing_subscription_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("mailing_subscription_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailing_subscription_events_campaign_id"), ["campaign_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_mailing_subscription_events_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(
            "ix_mailing_subscription_events_sub", ["subscription_id", "id"], unique=False
        )

    dialect = op.get_bind().dialect.name
    for statement in POSTGRES_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS mailing_events_insert_only() CASCADE")
    else:
        for name in (
            "mailing_subscription_events_no_update",
            "mailing_subscription_events_no_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("mailing_subscription_events", schema=None) as batch_op:
        batch_op.drop_index("ix_mailing_subscription_events_sub")
        batch_op.drop_index(batch_op.f("ix_mailing_subscription_events_client_id"))
        batch_op.drop_index(batch_op.f("ix_mailing_subscription_events_campaign_id"))

    op.drop_table("mailing_subscription_events")
    with op.batch_alter_table("mailing_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_mailing_subscriptions_list_status")

    op.drop_table("mailing_subscriptions")
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailing_lists_purpose_id"))
        batch_op.drop_index(batch_op.f("ix_mailing_lists_group_id"))

    op.drop_table("mailing_lists")
    op.drop_table("mailing_suppressions")
    op.drop_table("mailing_list_groups")
