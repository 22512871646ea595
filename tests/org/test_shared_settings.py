"""Process-wide copies of the settings tables (crm.org.services.shared): reused while
nothing changed, reloaded after any write, by this process, another one or plain SQL."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import event, text

from crm.extensions import db
from crm.fields.services import active_fields
from crm.org.services import organisation, organisation_for_update
from crm.security import services as security
from tests.conftest import make_field, make_test_app


def _statements(app: Flask, action) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def remember(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        with app.test_request_context():
            action()
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    return seen


def test_unchanged_settings_cost_one_small_query(app: Flask):
    with app.test_request_context():
        organisation()
        security.current_rules()
        active_fields()
    seen = _statements(
        app, lambda: (organisation(), security.current_rules(), active_fields(), organisation())
    )
    queries = [s for s in seen if "SAVEPOINT" not in s]  # the test's transaction wrapper
    assert len(queries) == 1 and "settings_generation" in queries[0]


def test_a_change_in_this_request_is_seen_at_once_and_a_rollback_is_forgotten(app: Flask):
    with app.test_request_context():
        original = organisation().name
        org = organisation_for_update()
        org.name = "Salon Łódź"
        db.session.flush()
        assert organisation().name == "Salon Łódź"
        db.session.rollback()
    with app.test_request_context():
        assert organisation().name == original


def test_a_plain_sql_change_is_seen_by_the_next_request(app: Flask):
    with app.test_request_context():
        assert "Anything" not in organisation().name
        make_field("Kontrakt", "checkbox")
        assert [f.label for f in active_fields()] == ["Kontrakt"]
        db.session.execute(text("UPDATE organisation SET name = 'Müller & Dvořák'"))
        db.session.execute(text("UPDATE custom_fields SET label = 'Umowa'"))
        db.session.commit()
    with app.test_request_context():
        assert organisation().name == "Müller & Dvořák"
        assert [f.label for f in active_fields()] == ["Umowa"]


def test_another_process_sees_changes_on_its_next_request(tmp_path: Path, monkeypatch):
    """Two app instances on one database file, each with its own engine and copies,
    as two web processes would have."""
    monkeypatch.setenv("CRM_INSTANCE_PATH", str(tmp_path / "instance"))
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first = make_test_app(url, tmp_path / "one")
    second = make_test_app(url, tmp_path / "two")
    try:
        with first.app_context():
            upgrade()
        with first.test_request_context():
            assert security.ip_allowed("203.0.113.9", None)
            assert active_fields() == []
            name = organisation().name
        with second.test_request_context():
            security.add_network("198.51.100.0/24", note="office")
            organisation_for_update().name = "Zakład Fryzjerski Żaneta"
            make_field("Contract", "checkbox")
            db.session.commit()
        with first.test_request_context():
            assert not security.ip_allowed("203.0.113.9", None)
            assert security.ip_allowed("198.51.100.20", None)
            assert organisation().name == "Zakład Fryzjerski Żaneta" != name
            assert [f.label for f in active_fields()] == ["Contract"]
    finally:
        for application in (first, second):
            with application.app_context():
                db.engine.dispose()


def test_a_signed_in_request_reads_the_token_with_the_user(app: Flask, admin_client) -> None:
    """The user loader's query carries the settings token: no round trip of its own."""
    admin_client.get("/clients/")  # warm the process's copies
    seen: list[str] = []

    def remember(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        assert admin_client.get("/clients/").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    with_token = [s for s in seen if "settings_generation" in s]
    assert len(with_token) == 1 and "FROM users" in with_token[0]
