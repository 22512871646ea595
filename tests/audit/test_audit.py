"""The tamper-evident audit log: hooks, hash chain, triggers, pruning and the viewer."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.audit.models import AuditCheckpoint, AuditEntry
from crm.audit.services import APPEND_LOCK_KEY, prune_before, record, verify_chain
from crm.extensions import db
from crm.sqltypes import utcnow
from tests.conftest import TEST_PASSWORD, login, make_client, make_user

HX = {"HX-Request": "true"}


def _entries(app: Flask) -> list[AuditEntry]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def _verify(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(args=["audit", "verify"])


def _activity(client: FlaskClient, app: Flask) -> int:
    """Log in (after one failed try), view a card, edit inline, delete another client."""
    with app.app_context():
        make_user()
        client_id = make_client(email="old@example.com").id
        doomed_id = make_client(first_name="Jan", last_name="Kowalski").id
    failed = client.post("/login", data={"email": "admin@example.com", "password": "wrong!"})
    assert failed.status_code == 200
    login(client, "admin@example.com")
    assert client.get(f"/clients/{client_id}").status_code == 200
    saved = client.post(
        f"/clients/{client_id}/groups/email/edit", data={"email": "new@example.com"}, headers=HX
    )
    assert saved.status_code == 200
    assert client.post(f"/clients/{doomed_id}/delete").status_code == 303
    return client_id


def _sql_update(app: Flask, entry_id: int) -> None:
    with app.app_context():
        db.session.execute(
            sa.text("UPDATE audit_entries SET ip = '10.6.6.6' WHERE id = :id"), {"id": entry_id}
        )
        db.session.commit()


def _refused(app: Flask, statement: str, entry_id: int) -> None:
    """The statement fails on the trigger, and the row is unchanged."""
    with app.app_context():
        nested = db.session.begin_nested()
        with pytest.raises(sa.exc.DBAPIError) as refusal:
            db.session.execute(sa.text(statement), {"id": entry_id})
        nested.rollback()
        assert "append-only" in str(refusal.value)
        db.session.commit()


def test_actions_through_http_are_recorded_and_the_chain_verifies(client, app):
    client_id = _activity(client, app)
    entries = _entries(app)
    assert [e.action for e in entries] == [
        "login_failed",
        "login",
        "client.view",
        "client.update",
        "client.delete",
    ]
    failed, ok, view, update, deleted = entries
    assert failed.details == {"email": "admin@example.com"} and failed.actor_id is None
    assert ok.actor_email == "admin@example.com" and ok.ip == "127.0.0.1"
    assert view.client_id == client_id and view.actor_id == ok.actor_id
    assert update.details == {"changes": {"email": ["old@example.com", "new@example.com"]}}
    assert deleted.details == {"name": "Jan Kowalski"}
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    result = _verify(app)
    assert result.exit_code == 0, result.output
    assert "5 entries verified" in result.output


def test_create_and_field_changes_are_recorded(admin_client, app):
    with app.app_context():
        admin_id = db.session.scalar(sa.text("SELECT id FROM users"))
    created = admin_client.post(
        "/clients/new", data={"first_name": "Ewa", "last_name": "Nowak", "owner_id": str(admin_id)}
    )
    assert created.status_code == 302
    field = admin_client.post("/admin/fields/new", data={"label": "Birthday", "field_type": "date"})
    assert field.status_code == 302
    with app.app_context():
        field_id = db.session.scalar(sa.text("SELECT id FROM custom_fields"))
    admin_client.post(f"/admin/fields/{field_id}/archive")
    admin_client.post(f"/admin/fields/{field_id}/restore")
    actions = [e.action for e in _entries(app)]
    assert actions == ["login", "client.create", "field.create", "field.archive", "field.restore"]
    create = _entries(app)[1]
    assert create.details["changes"]["first_name"] == [None, "Ewa"]
    assert _verify(app).exit_code == 0


def test_a_failed_change_leaves_no_entry(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    response = admin_client.post(
        f"/clients/{client_id}/groups/email/edit", data={"email": "not an email"}, headers=HX
    )
    assert response.status_code == 200
    assert [e.action for e in _entries(app)] == ["login"]


def test_the_trigger_refuses_update_and_verify_catches_a_superuser_edit(client, app):
    _activity(client, app)
    target = _entries(app)[2].id
    _refused(app, "UPDATE audit_entries SET ip = '10.6.6.6' WHERE id = :id", target)
    assert _verify(app).exit_code == 0

    # A database superuser can switch the guard off; the chain still gives it away.
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(sa.text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_entries_no_update"))
        db.session.commit()
    _sql_update(app, target)
    result = _verify(app)
    assert result.exit_code != 0
    assert f"Audit entry {target} failed verification: hash mismatch" in result.output


def test_the_trigger_refuses_delete(client, app):
    _activity(client, app)
    target = _entries(app)[1].id
    _refused(app, "DELETE FROM audit_entries WHERE id = :id", target)
    assert len(_entries(app)) == 5


def test_a_deleted_entry_breaks_the_chain_at_the_next_one(client, app):
    _activity(client, app)
    entries = _entries(app)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(sa.text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_entries_no_delete"))
        db.session.execute(
            sa.text("DELETE FROM audit_entries WHERE id = :id"), {"id": entries[2].id}
        )
        db.session.commit()
    result = _verify(app)
    assert result.exit_code != 0
    assert f"Audit entry {entries[3].id} failed verification: gap" in result.output


def test_prune_leaves_a_checkpoint_and_the_rest_verifies(client, app):
    _activity(client, app)
    entries = _entries(app)
    with app.app_context():
        # Everything up to the card view is "old".
        result = prune_before(entries[2].created_at + timedelta(microseconds=1))
        db.session.commit()
        assert result.removed == 3
        assert result.checkpoint is not None
        assert result.checkpoint.last_hash == entries[2].entry_hash
        # The grant is gone again: a plain delete is refused as before.
        assert db.session.scalar(sa.text("SELECT count(*) FROM audit_prune_grants")) == 0
    _refused(app, "DELETE FROM audit_entries WHERE id = :id", entries[3].id)
    assert [e.id for e in _entries(app)] == [entries[3].id, entries[4].id]
    verified = _verify(app)
    assert verified.exit_code == 0, verified.output
    assert "2 entries verified" in verified.output

    # New entries chain on; pruning everything through the command keeps it verifiable.
    with app.test_request_context():
        record("client.view", client_id=1)
        db.session.commit()
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    pruned = app.test_cli_runner().invoke(args=["audit", "prune", "--before", tomorrow])
    assert pruned.exit_code == 0, pruned.output
    assert "3 audit entries" in pruned.output
    assert _entries(app) == []
    with app.test_request_context():
        record("client.view", client_id=1)
        db.session.commit()
    verified = _verify(app)
    assert verified.exit_code == 0 and "1 entries verified" in verified.output
    with app.app_context():
        assert db.session.scalar(select(sa.func.count()).select_from(AuditCheckpoint)) == 2


def test_prune_needs_exactly_one_cutoff_and_keep_days_works(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["audit", "prune"]).exit_code != 0
    kept = runner.invoke(args=["audit", "prune", "--keep-days", "30"])
    assert kept.exit_code == 0 and "No audit entries" in kept.output


def test_verify_on_an_empty_log(app):
    with app.app_context():
        assert verify_chain().ok
    assert "0 entries verified" in _verify(app).output


def test_viewer_lists_entries_and_filters(client, app):
    client_id = _activity(client, app)
    with app.app_context():
        admin_id = db.session.scalar(sa.text("SELECT id FROM users"))
    page = client.get("/admin/audit/")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Audit log" in body and "Signed in" in body and "Failed sign-in" in body
    assert "email: old@example.com → new@example.com" in body
    assert f'href="/clients/{client_id}"' in body
    assert "(deleted)" in body
    rows = [int(part.split('"', 1)[0]) for part in body.split('<tr id="audit-')[1:]]
    assert rows == sorted(rows, reverse=True) and len(rows) == 5  # newest first

    by_action = client.get("/admin/audit/?action=client.view", headers=HX).get_data(as_text=True)
    assert "Client viewed" in by_action and "Signed in" not in by_action
    assert "<html" not in by_action
    by_client = client.get(f"/admin/audit/?client={client_id}", headers=HX).get_data(as_text=True)
    assert "Client changed" in by_client and "Client deleted" not in by_client
    by_user = client.get(f"/admin/audit/?user={admin_id}", headers=HX).get_data(as_text=True)
    assert "Signed in" in by_user and "Failed sign-in" not in by_user
    future = client.get("/admin/audit/?from=2999-01-01", headers=HX).get_data(as_text=True)
    assert "Nothing matches these filters." in future
    today = utcnow().date().isoformat()
    ranged = client.get(f"/admin/audit/?from=2000-01-01&to={today}", headers=HX).get_data(
        as_text=True
    )
    assert "Client viewed" in ranged


def test_viewer_pages_older_entries_with_htmx(admin_client, app, monkeypatch):
    monkeypatch.setattr("crm.audit.views.PAGE", 2)
    with app.test_request_context():
        for n in range(3):
            record("client.view", client_id=1000 + n)
        db.session.commit()
    first = admin_client.get("/admin/audit/").get_data(as_text=True)
    assert "Client #1002" in first and "Client #1001" in first and "Older entries" in first
    assert "Client #1000" not in first
    ids = [e.id for e in _entries(app)]
    older = admin_client.get(f"/admin/audit/?before={ids[2]}", headers=HX).get_data(as_text=True)
    assert "Client #1000" in older and "Signed in" in older and "Client #1002" not in older
    assert "Older entries" not in older


def test_viewer_needs_the_permission(client, app):
    with app.app_context():
        make_user("anna@example.com", role="sales", name="Anna")
    login(client, "anna@example.com")
    assert client.get("/admin/audit/").status_code == 403
    assert "Audit log" not in client.get("/clients/").get_data(as_text=True)


def test_admin_menu_links_the_viewer(admin_client):
    assert 'href="/admin/audit/"' in admin_client.get("/clients/").get_data(as_text=True)


def test_empty_state(app, client):
    with app.app_context():
        make_user("boss@example.com", role="admin", name="Boss")
    # Signing in writes an entry; look at a filter with nothing in it.
    client.post("/login", data={"email": "boss@example.com", "password": TEST_PASSWORD})
    body = client.get("/admin/audit/?action=client.delete").get_data(as_text=True)
    assert "No audit entries" in body


def test_an_append_holds_the_write_lock_until_commit(app):
    """Two appenders can never read the same last hash: the second waits for the first."""
    with app.test_request_context():
        record("client.view", client_id=1)  # flushed, not committed: the lock is held
        other = db.engine.connect()
        try:
            if db.engine.dialect.name == "postgresql":
                got = other.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": APPEND_LOCK_KEY}
                ).scalar()
                assert got is False
            else:
                other.exec_driver_sql("PRAGMA busy_timeout=0")
                with pytest.raises(sa.exc.OperationalError, match="locked"):
                    other.execute(sa.text("DELETE FROM audit_prune_grants WHERE 1 = 0"))
            other.rollback()
        finally:
            other.close()
        db.session.rollback()


def test_verify_passes_on_a_busy_demo_database_and_names_an_edited_entry(client, app):
    """Demo data, three people signing in, viewing and editing cards in turn: the chain
    verifies; one row edited behind the triggers' back is named."""
    assert app.test_cli_runner().invoke(args=["demo", "--clients", "150"]).exit_code == 0
    with app.app_context():
        make_user()
        make_user("anna@example.com", role="manager", name="Anna Łukasiewicz")
        make_user("jurgen@example.com", role="manager", name="Jürgen Müller")
        ids = list(db.session.scalars(select(sa.text("id")).select_from(sa.text("clients"))))[:30]
    for n, (email, client_id) in enumerate(
        zip(itertools.cycle(["admin@example.com", "anna@example.com", "jurgen@example.com"]), ids)
    ):
        login(client, email)
        assert client.get(f"/clients/{client_id}").status_code == 200
        edited = client.post(
            f"/clients/{client_id}/groups/email/edit",
            data={"email": f"klient{n}@example.com"},
            headers=HX,
        )
        assert edited.status_code == 200
        client.post("/logout")
    entries = _entries(app)
    assert len(entries) >= 90
    assert {"login", "client.view", "client.update"} <= {e.action for e in entries}
    result = _verify(app)
    assert result.exit_code == 0, result.output

    target = entries[len(entries) // 2].id
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(sa.text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_entries_no_update"))
        db.session.commit()
    _sql_update(app, target)
    result = _verify(app)
    assert result.exit_code != 0
    assert f"Audit entry {target} failed verification" in result.output


def test_a_card_view_entry_commits_without_waiting_for_the_disk(app):
    """`durable=False` turns synchronous commit off for its transaction (SET LOCAL, on
    PostgreSQL; SQLite in WAL mode has no per-transaction switch); a durable entry
    leaves it on. The test's outer transaction spans both, so the durable one is first.
    Both chain as usual."""
    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"

        def setting() -> str | None:
            if not postgres:
                return None
            return db.session.scalar(sa.text("SHOW synchronous_commit"))

        record("client.update", target_type="client", target_id=1)
        durable = setting()
        db.session.commit()
        record("client.view", target_type="client", target_id=1, durable=False)
        relaxed = setting()
        db.session.commit()
        if postgres:
            assert (durable, relaxed) == ("on", "off")
        assert verify_chain().ok
        assert [e.action for e in _entries(app)][-2:] == ["client.update", "client.view"]
