"""network security: IP allow-list and login attempts

Revision ID: 0003_network_security
Revises: 0002_audit_log
Create Date: 2026-11-22 05:10:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0003_network_security"
down_revision = "0002_audit_log"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "allowed_networks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=49), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["roles.id"],
            name=op.f("fk_allowed_networks_role_id_roles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allowed_networks")),
    )
    with op.batch_alter_table("allowed_networks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_allowed_networks_role_id"), ["role_id"], unique=False
        )

    op.create_table(
        "login_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_login_attempts_email_created_at", ["email", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_login_attempts_ip_created_at", ["ip", "created_at"], unique=False
        )


def downgrade():
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_login_attempts_ip_created_at")
        batch_op.drop_index("ix_login_attempts_email_created_at")
    op.drop_table("login_attempts")

    with op.batch_alter_table("allowed_networks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allowed_networks_role_id"))
    op.drop_table("allowed_networks")
