"""settings generation: a token that changes with every write to the settings tables,
and (PostgreSQL) one call that takes the audit append lock and reads the last hash

Revision ID: 0005_settings_generation
Revises: 0004_accounts
Create Date: 2026-11-22 07:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0005_settings_generation"
down_revision = "0004_accounts"
branch_labels = None
depends_on = None

# Tables whose rows every request reads and that change only by an admin's hand. Any
# write to them replaces the token, and every process then reloads its copies.
WATCHED = ["organisation", "allowed_networks", "custom_fields", "deal_stages"]

POSTGRES = [
    """CREATE FUNCTION settings_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE settings_generation SET token = md5(random()::text || clock_timestamp()::text);
        RETURN NULL;
    END $$""",
    # Takes the audit append lock, then reads the chain's last hash. In a VOLATILE
    # function each statement gets a fresh snapshot under READ COMMITTED, so the read
    # sees every entry committed by the previous lock holder: the two steps in one
    # round trip, where one plain statement would read a snapshot taken before the lock.
    """CREATE FUNCTION audit_append_prev_hash(lock_key bigint, genesis text)
    RETURNS text LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        last text;
    BEGIN
        PERFORM pg_advisory_xact_lock(lock_key);
        SELECT entry_hash INTO last FROM audit_entries ORDER BY id DESC LIMIT 1;
        IF last IS NULL THEN
            SELECT last_hash INTO last FROM audit_checkpoints ORDER BY id DESC LIMIT 1;
        END IF;
        RETURN COALESCE(last, genesis);
    END $$""",
] + [
    f"""CREATE TRIGGER {table}_settings_generation
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION settings_generation_bump()"""
    for table in WATCHED
]

SQLITE = [
    f"""CREATE TRIGGER {table}_settings_generation_{event.lower()} AFTER {event} ON {table}
    BEGIN
        UPDATE settings_generation SET token = lower(hex(randomblob(16)));
    END"""
    for table in WATCHED
    for event in ("INSERT", "UPDATE", "DELETE")
]


def upgrade():
    op.create_table(
        "settings_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settings_generation")),
    )
    op.execute("INSERT INTO settings_generation (id, token) VALUES (1, 'initial')")
    dialect = op.get_bind().dialect.name
    for statement in POSTGRES if dialect == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_append_prev_hash(bigint, text)")
        op.execute("DROP FUNCTION IF EXISTS settings_generation_bump() CASCADE")
    else:
        for table in WATCHED:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_settings_generation_{event}")
    op.drop_table("settings_generation")
