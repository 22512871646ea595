"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import warnings
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from crm.extensions import db
from crm.migrations_support import EXPRESSION_INDEXES, include_object

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
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes (test_expression_indexes_exist).
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
            diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_expression_indexes_exist(app):
    with app.app_context():
        connection = db.session.connection()
        if connection.dialect.name == "sqlite":
            rows = connection.execute(sa.text("SELECT name FROM sqlite_master WHERE type='index'"))
        else:
            rows = connection.execute(sa.text("SELECT indexname FROM pg_indexes"))
        names = {row[0] for row in rows}
    assert names >= EXPRESSION_INDEXES


def test_custom_field_indexes_are_left_to_the_app(app):
    assert include_object(None, "ix_cf_contract", "index", True, None) is False
    assert include_object(None, "ix_clients_name_order", "index", True, None) is True
