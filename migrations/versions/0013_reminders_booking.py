"""appointment reminders, online booking settings, calendar feeds, SMS opt-out

Revision ID: 0013_reminders_booking
Revises: 0012_appointments
Create Date: 2026-12-03 11:40:00

New columns are plain ADD COLUMN with server defaults (no table rebuild on SQLite, so
the triggers on organisation stay; no rewrite on PostgreSQL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_reminders_booking"
down_revision = "0012_appointments"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "appointment_reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name=op.f("fk_appointment_reminders_appointment_id_appointments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_reminders")),
        sa.UniqueConstraint(
            "appointment_id", "kind", "channel", name="uq_appointment_reminders_kind"
        ),
    )
    op.create_index(
        "ix_appointment_reminders_status_due",
        "appointment_reminders",
        ["status", "due_at"],
        unique=False,
    )

    op.create_table(
        "calendar_feeds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_calendar_feeds_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_calendar_feeds_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_feeds")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_calendar_feeds_token_hash")),
    )
    op.create_index(op.f("ix_calendar_feeds_user_id"), "calendar_feeds", ["user_id"], unique=False)

    service_columns = [
        sa.Column("online_booking", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("cancel_cutoff_hours", sa.Integer(), nullable=False, server_default="24"),
        sa.Column(
            "reminder_channels", sa.JSON(), nullable=False, server_default='["email", "sms"]'
        ),
        sa.Column("send_confirmation", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("reminder_days_before", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("reminder_hour", sa.SmallInteger(), nullable=False, server_default="18"),
    ]
    for column in service_columns:
        op.add_column("appointment_services", column)

    op.add_column("appointments", sa.Column("public_token", sa.String(length=43), nullable=True))
    op.create_index("ix_appointments_public_token", "appointments", ["public_token"], unique=True)
    op.add_column("clients", sa.Column("sms_opt_out_at", sa.DateTime(), nullable=True))
    # Online booking matches a typed email case-insensitively: lower(email) = ...
    op.create_index("ix_clients_email_lower", "clients", [sa.text("lower(email)")], unique=False)
    op.add_column(
        "organisation",
        sa.Column("privacy_notice_url", sa.String(length=500), nullable=False, server_default=""),
    )
    op.add_column(
        "organisation",
        sa.Column(
            "calendar_feed_detail", sa.String(length=16), nullable=False, server_default="booked"
        ),
    )


def downgrade():
    # Native DROP COLUMN: a batch rebuild would trip the triggers on organisation and
    # on tables that name clients.
    op.execute("ALTER TABLE organisation DROP COLUMN calendar_feed_detail")
    op.execute("ALTER TABLE organisation DROP COLUMN privacy_notice_url")
    op.drop_index("ix_clients_email_lower", table_name="clients")
    op.execute("ALTER TABLE clients DROP COLUMN sms_opt_out_at")
    op.drop_index("ix_appointments_public_token", table_name="appointments")
    op.execute("ALTER TABLE appointments DROP COLUMN public_token")
    for name in (
        "reminder_hour",
        "reminder_days_before",
        "send_confirmation",
        "reminder_channels",
        "cancel_cutoff_hours",
        "online_booking",
    ):
        op.execute(f"ALTER TABLE appointment_services DROP COLUMN {name}")
    op.drop_index(op.f("ix_calendar_feeds_user_id"), table_name="calendar_feeds")
    op.drop_table("calendar_feeds")
    op.drop_index("ix_appointment_reminders_status_due", table_name="appointment_reminders")
    op.drop_table("appointment_reminders")
