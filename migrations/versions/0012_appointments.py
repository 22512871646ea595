"""appointments: services (appointment types) and their staff, weekly working hours,
exceptions and blocks, appointments; the appointments permissions

Revision ID: 0012_appointments
Revises: 0011_erasure
Create Date: 2026-12-02 17:20:00

Roles that exist already get the new permissions where the shipped role of the same
name has them (admin and manager all three, sales view and edit, readonly view); roles
edited by an admin keep their other permissions.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_appointments"
down_revision = "0011_erasure"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "appointment_services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_before_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_after_minutes", sa.Integer(), nullable=False),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(length=300), nullable=False),
        sa.Column("online_url", sa.String(length=500), nullable=False),
        sa.Column("min_notice_hours", sa.Integer(), nullable=False),
        sa.Column("max_days_ahead", sa.Integer(), nullable=False),
        sa.Column("required_data", sa.JSON(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("capacity >= 1", name=op.f("ck_appointment_services_capacity")),
        sa.CheckConstraint("duration_minutes > 0", name=op.f("ck_appointment_services_duration")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_services")),
    )
    op.create_table(
        "appointment_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=True),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.Column("weekday", sa.SmallInteger(), nullable=True),
        sa.Column("start_time", sa.Time(), nullable=True),
        sa.Column("end_time", sa.Time(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_appointment_blocks_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_blocks")),
    )
    with op.batch_alter_table("appointment_blocks", schema=None) as batch_op:
        batch_op.create_index("ix_appointment_blocks_user_kind", ["user_id", "kind"], unique=False)

    op.create_table(
        "appointment_exceptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=True),
        sa.Column("end_time", sa.Time(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.CheckConstraint("start_date <= end_date", name=op.f("ck_appointment_exceptions_dates")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_appointment_exceptions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_exceptions")),
    )
    with op.batch_alter_table("appointment_exceptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_appointment_exceptions_user_dates", ["user_id", "end_date"], unique=False
        )

    op.create_table(
        "appointment_service_staff",
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["appointment_services.id"],
            name=op.f("fk_appointment_service_staff_service_id_appointment_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_appointment_service_staff_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("service_id", "user_id", name=op.f("pk_appointment_service_staff")),
    )
    with op.batch_alter_table("appointment_service_staff", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appointment_service_staff_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "appointment_working_hours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.CheckConstraint(
            "start_time < end_time", name=op.f("ck_appointment_working_hours_order")
        ),
        sa.CheckConstraint(
            "weekday BETWEEN 0 AND 6", name=op.f("ck_appointment_working_hours_weekday")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_appointment_working_hours_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_working_hours")),
    )
    with op.batch_alter_table("appointment_working_hours", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appointment_working_hours_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "appointments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("buffer_before_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_after_minutes", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("starts_at < ends_at", name=op.f("ck_appointments_order")),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_appointments_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_appointments_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["appointment_services.id"],
            name=op.f("fk_appointments_service_id_appointment_services"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["users.id"], name=op.f("fk_appointments_staff_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
    )
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_appointments_client_starts", ["client_id", "starts_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_appointments_service_id"), ["service_id"], unique=False
        )
        batch_op.create_index(
            "ix_appointments_staff_starts", ["staff_id", "starts_at"], unique=False
        )

    _grant_permissions(add=True)


GRANTS = {
    "appointments:view": ("admin", "manager", "sales", "readonly"),
    "appointments:edit": ("admin", "manager", "sales"),
    "appointments:manage": ("admin", "manager"),
}


def _grant_permissions(add):
    roles = sa.table("roles", sa.column("id"), sa.column("name"), sa.column("permissions", sa.JSON))
    connection = op.get_bind()
    for role_id, name, stored in connection.execute(
        sa.select(roles.c.id, roles.c.name, roles.c.permissions)
    ):
        permissions = list(stored or [])
        changed = False
        for permission, role_names in GRANTS.items():
            if add and name in role_names and permission not in permissions:
                permissions.append(permission)
                changed = True
            elif not add and permission in permissions:
                permissions.remove(permission)
                changed = True
        if changed:
            connection.execute(
                roles.update().where(roles.c.id == role_id).values(permissions=permissions)
            )


def downgrade():
    _grant_permissions(add=False)
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index("ix_appointments_staff_starts")
        batch_op.drop_index(batch_op.f("ix_appointments_service_id"))
        batch_op.drop_index("ix_appointments_client_starts")

    op.drop_table("appointments")
    with op.batch_alter_table("appointment_working_hours", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appointment_working_hours_user_id"))

    op.drop_table("appointment_working_hours")
    with op.batch_alter_table("appointment_service_staff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appointment_service_staff_user_id"))

    op.drop_table("appointment_service_staff")
    with op.batch_alter_table("appointment_exceptions", schema=None) as batch_op:
        batch_op.drop_index("ix_appointment_exceptions_user_dates")

    op.drop_table("appointment_exceptions")
    with op.batch_alter_table("appointment_blocks", schema=None) as batch_op:
        batch_op.drop_index("ix_appointment_blocks_user_kind")

    op.drop_table("appointment_blocks")
    op.drop_table("appointment_services")
