"""Two appenders racing on PostgreSQL: the second waits for the first's lock and then
chains onto the entry the first committed (the one-round-trip lock-and-read function
must read after the lock, not from a snapshot taken before it)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from crm.audit.models import AuditEntry
from crm.audit.services import record, verify_chain
from crm.config import normalise_database_url
from crm.extensions import db
from tests.conftest import PG_URL, make_test_app

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs CRM_TEST_DATABASE_URL (PostgreSQL)")


@pytest.fixture
def pg_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A database of its own: the entries here are really committed (and the log is
    append-only, so they could not be cleaned out of a shared one)."""
    monkeypatch.setenv("CRM_INSTANCE_PATH", str(tmp_path / "instance"))
    admin_url = normalise_database_url(PG_URL or "")
    name = f"crm_race_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    app = make_test_app(admin_url.rsplit("/", 1)[0] + f"/{name}", tmp_path)
    try:
        with app.app_context():
            upgrade()
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_waiting_appender_chains_onto_the_entry_committed_before_it(pg_app):  # type: ignore[no-untyped-def]
    first_flushed = threading.Event()
    second_started = threading.Event()
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with pg_app.app_context():
                entry = record("client.view", client_id=1)
                results["first"] = entry.entry_hash
                first_flushed.set()
                # Hold the lock until the second appender is (almost certainly) waiting.
                second_started.wait(5)
                db.session.execute(sa.text("SELECT pg_sleep(0.3)"))
                db.session.commit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            first_flushed.set()

    def second() -> None:
        try:
            first_flushed.wait(5)
            with pg_app.app_context():
                second_started.set()
                entry = record("client.view", client_id=2)
                results["second_prev"] = entry.prev_hash
                db.session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert not errors, errors
    assert results["second_prev"] == results["first"]
    with pg_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(AuditEntry.id))) == 2
        assert verify_chain().ok
