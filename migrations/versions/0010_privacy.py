"""privacy: the data-subject request register, export jobs, erasure records;
restriction of processing on clients; the requests:manage permission

Revision ID: 0010_privacy
Revises: 0009_campaigns
Create Date: 2026-12-02 17:10:00

Roles that exist already get the new permission where the shipped role has it
(admin and manager); roles edited by an admin keep their other permissions.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_privacy"
down_revision = "0009_campaigns"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "privacy_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("subject_ref", sa.Integer(), nullable=True),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("identity_check", sa.Text(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("extended_until", sa.Date(), nullable=True),
        sa.Column("extension_reason", sa.Text(), nullable=False),
        sa.Column("extended_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
            name=op.f("fk_privacy_requests_assignee_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_privacy_requests_client_id_clients"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_privacy_requests_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_requests")),
    )
    with op.batch_alter_table("privacy_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_privacy_requests_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index("ix_privacy_requests_status_due", ["status", "due_on"], unique=False)

    op.create_table(
        "privacy_erasures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_ref", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("erased_by_id", sa.Integer(), nullable=True),
        sa.Column("erased_at", sa.DateTime(), nullable=False),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("redacted_audit_entries", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["erased_by_id"],
            ["users.id"],
            name=op.f("fk_privacy_erasures_erased_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["privacy_requests.id"],
            name=op.f("fk_privacy_erasures_request_id_privacy_requests"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_erasures")),
    )
    op.create_table(
        "privacy_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_privacy_exports_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["privacy_requests.id"],
            name=op.f("fk_privacy_exports_request_id_privacy_requests"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_privacy_exports_requested_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_exports")),
    )
    with op.batch_alter_table("privacy_exports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_privacy_exports_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_privacy_exports_request_id"), ["request_id"], unique=False
        )
        batch_op.create_index("ix_privacy_exports_status", ["status", "id"], unique=False)

    # Plain ADD COLUMN (no table rebuild on SQLite; no rewrite on PostgreSQL).
    op.add_column("clients", sa.Column("restricted_at", sa.DateTime(), nullable=True))
    op.add_column(
        "clients",
        sa.Column("restriction_reason", sa.String(length=300), nullable=False, server_default=""),
    )
    _grant_permission(PERMISSION, add=True)
    # Recipients and processors, named in the data export (Art. 15(1)(c)).
    op.add_column(
        "organisation", sa.Column("recipients", sa.Text(), nullable=False, server_default="")
    )


PERMISSION = "requests:manage"
ROLES_WITH_PERMISSION = ("admin", "manager")


def _grant_permission(permission, add):
    roles = sa.table("roles", sa.column("id"), sa.column("name"), sa.column("permissions", sa.JSON))
    connection = op.get_bind()
    for role_id, name, stored in connection.execute(
        sa.select(roles.c.id, roles.c.name, roles.c.permissions)
    ):
        if name not in ROLES_WITH_PERMISSION:
            continue
        permissions = list(stored or [])
        if add and permission not in permissions:
            permissions.append(permission)
        elif not add and permission in permissions:
            permissions.remove(permission)
        else:
            continue
        connection.execute(
            roles.update().where(roles.c.id == role_id).values(permissions=permissions)
        )


def downgrade():
    _grant_permission(PERMISSION, add=False)
    # Native DROP COLUMN: a batch rebuild of clients would trip the triggers that name it.
    for column in ("restriction_reason", "restricted_at"):
        op.execute(f"ALTER TABLE clients DROP COLUMN {column}")

    with op.batch_alter_table("privacy_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_privacy_exports_status")
        batch_op.drop_index(batch_op.f("ix_privacy_exports_request_id"))
        batch_op.drop_index(batch_op.f("ix_privacy_exports_client_id"))

    op.drop_table("privacy_exports")
    op.drop_table("privacy_erasures")
    with op.batch_alter_table("privacy_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_privacy_requests_status_due")
        batch_op.drop_index(batch_op.f("ix_privacy_requests_client_id"))

    op.drop_table("privacy_requests")
    # Native DROP COLUMN: a batch rebuild would trip the settings triggers on the table.
    op.execute("ALTER TABLE organisation DROP COLUMN recipients")
