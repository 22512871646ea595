"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from crm.extensions import db
from crm.migrations_support import include_object

MIGRATIONS = Path(__file__).parent.parent / "migrations"


def test_there_is_one_head():
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_models_and_migrations_agree(app):
    # The `app` fixture built this database with `flask db upgrade` (the migrations).
    with app.app_context():
        context = MigrationContext.configure(
            db.session.connection(),
            opts={"include_object": include_object, "compare_type": True},
        )
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_custom_field_indexes_are_left_to_the_app(app):
    assert include_object(None, "ix_cf_contract", "index", True, None) is False
    assert include_object(None, "ix_clients_name_order", "index", True, None) is True
