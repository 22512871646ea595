"""Erasure: the confirmation, what goes and what stays, audit redaction under the
triggers and its verification, the request it answers, the command."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from crm.audit.models import AuditEntry, AuditRedactionGrant
from crm.audit.services import record, verify_chain
from crm.clients.models import Client
from crm.extensions import db
from crm.privacy.erasure import MARKER
from crm.privacy.models import DataRequest, Erasure, RequestKind
from tests.campaigns.conftest import smtp, smtp_server  # noqa: F401 (fixtures)
from tests.conftest import login, make_client, make_user
from tests.privacy.conftest import make_request
from tests.privacy.erasure_factories import EMAIL, FIRST, LAST, PHONE, seed_rich_client


def _entries(action: str) -> list[AuditEntry]:
    return list(
        db.session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
    )


def test_the_page_lists_what_goes_and_asks_for_the_name(app, admin_client):
    with app.app_context():
        client = make_client(first_name="Tomáš", last_name="Dvořák", email="tomas@example.cz")
        client_id = client.id
    page = admin_client.get(f"/clients/{client_id}/erase")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Erase Tomáš Dvořák?" in text and "Client card" in text and "suppression list" in text
    wrong = admin_client.post(f"/clients/{client_id}/erase", data={"confirmation": "Tomas Dvorak"})
    assert wrong.status_code == 422
    assert "Type the name exactly as shown: Tomáš Dvořák" in wrong.get_data(as_text=True)
    empty = admin_client.post(f"/clients/{client_id}/erase", data={"confirmation": ""})
    assert empty.status_code == 422
    with app.app_context():
        assert db.session.get(Client, client_id) is not None
    done = admin_client.post(f"/clients/{client_id}/erase", data={"confirmation": " tomáš dvořák "})
    assert done.status_code == 303 and done.headers["Location"].endswith("/clients/")
    with app.app_context():
        assert db.session.get(Client, client_id) is None
        erasure = db.session.scalar(sa.select(Erasure).where(Erasure.subject_ref == client_id))
        assert erasure.counts["clients"] == 1 and erasure.request_id is None
    assert "was erased" in admin_client.get("/clients/").get_data(as_text=True)


def test_erasure_needs_the_erase_permission(app, admin):
    with app.app_context():
        make_user("manager@example.com", role="manager", name="Mia Manager")
        client_id = make_client(email="kept@example.pl").id
    http = app.test_client()
    login(http, "manager@example.com")
    assert http.get(f"/clients/{client_id}/erase").status_code == 403
    assert http.post(f"/clients/{client_id}/erase", data={"confirmation": "x"}).status_code == 403
    with app.app_context():
        assert db.session.get(Client, client_id) is not None


def test_redaction_keeps_structure_other_people_and_the_request(app, admin_client, smtp):  # noqa: F811
    with app.app_context():
        seeded = seed_rich_client(app, admin_client)
        other_view = record(
            "client.view", client_id=seeded.other_id, details={"name": "Marek Nowak"}
        )
        db.session.commit()
        other_view_id = other_view.id
    response = admin_client.post(
        f"/clients/{seeded.client_id}/erase",
        data={"confirmation": f"{FIRST} {LAST}", "request_id": seeded.erasure_request_id},
    )
    assert response.status_code == 303
    with app.app_context():
        [update] = [e for e in _entries("client.update") if e.client_id == seeded.client_id]
        changes = update.details["changes"]
        assert set(changes) >= {"first_name", "company"}  # keys stay
        assert changes["first_name"] == [MARKER, MARKER]
        confirmed = [e for e in _entries("mailing.confirmed") if e.client_id == seeded.client_id]
        assert confirmed and all(e.details["list"] == "Newsletter" for e in confirmed)
        [test_send] = _entries("campaign.test_send")
        assert test_send.details["to"] == MARKER and test_send.details["result"] == "sent"
        restrict = _entries("client.restrict")[0]
        assert restrict.details["reason"] == MARKER
        assert db.session.get(AuditEntry, other_view_id).details == {"name": "Marek Nowak"}
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditRedactionGrant)) == 0

        data_request = db.session.get(DataRequest, seeded.erasure_request_id)
        assert data_request.client_id is None and data_request.subject_ref == seeded.client_id
        assert data_request.requester == MARKER and data_request.details == MARKER
        assert data_request.identity_check == MARKER
        assert data_request.status == "done" and "Erased on" in data_request.outcome
        unlinked = db.session.get(DataRequest, seeded.unlinked_request_id)
        assert unlinked.requester == MARKER and PHONE not in unlinked.details
        assert unlinked.details.startswith("Asked by phone")

        erasure = db.session.scalar(sa.select(Erasure))
        assert erasure.request_id == seeded.erasure_request_id
        for kind in ("notes", "attachments", "deals", "sent_messages", "campaign_deliveries"):
            assert erasure.counts[kind] == 1, kind
        assert erasure.counts["consent_events"] >= 2 and erasure.counts["field_values"] == 2
        assert erasure.counts["mailing_subscription_events"] == 3
        [entry] = _entries("client.erase")
        assert entry.details["subject_ref"] == seeded.client_id
        assert len(entry.details["redacted_entries"]) == erasure.redacted_audit_entries > 5
        assert str(update.id) in entry.details["redacted_entries"]
        assert EMAIL not in str(entry.details) and LAST not in str(entry.details)


def test_verify_accepts_recorded_redactions_and_catches_later_changes(app, admin_client):
    with app.app_context():
        client = make_client(first_name="Łucja", last_name="Wróblewska", email="lucja@example.pl")
        client_id = client.id
        record("client.update", client_id=client_id, details={"changes": {"city": ["", "Łódź"]}})
        record("campaign.test_send", details={"to": "lucja@example.pl", "result": "sent"})
        db.session.commit()
    assert (
        admin_client.post(
            f"/clients/{client_id}/erase", data={"confirmation": "Łucja Wróblewska"}
        ).status_code
        == 303
    )
    runner = app.test_cli_runner()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "2 redacted by erasure" in result.output
    with app.app_context():
        target = db.session.scalar(
            sa.select(AuditEntry.id).where(AuditEntry.action == "campaign.test_send")
        )
        # A change after the erasure, past the triggers, is still caught.
        if db.session.get_bind().dialect.name == "postgresql":
            db.session.execute(sa.text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_entries_no_update"))
        db.session.execute(
            sa.update(AuditEntry.__table__)
            .where(AuditEntry.__table__.c.id == target)
            .values(details={"to": "someone@else.example", "result": "sent"})
        )
        db.session.commit()
        result = verify_chain()
        assert not result.ok and result.bad_id == target
        assert "differs from what erasure entry" in (result.reason or "")


def test_the_triggers_allow_only_granted_details_changes(app):
    with app.app_context():
        entry = record("client.view", client_id=1, details={"name": "Jan"})
        db.session.commit()
        table = AuditEntry.__table__
        for values, granted in (
            ({"details": {"name": MARKER}}, False),  # no grant
            ({"details": {"name": MARKER}, "action": "other"}, True),  # another column
            ({"details": {"name": MARKER}, "ip": "10.0.0.1"}, True),  # ip only to NULL
        ):
            with pytest.raises(DBAPIError), db.session.begin_nested():
                if granted:
                    db.session.add(AuditRedactionGrant(entry_id=entry.id))
                    db.session.flush()
                db.session.execute(sa.update(table).where(table.c.id == entry.id).values(**values))
        with db.session.begin_nested():
            db.session.add(AuditRedactionGrant(entry_id=entry.id))
            db.session.flush()
            db.session.execute(
                sa.update(table)
                .where(table.c.id == entry.id)
                .values(details={"name": MARKER}, ip=None)
            )
        db.session.expire_all()
        assert db.session.get(AuditEntry, entry.id).details == {"name": MARKER}


def test_erasure_under_a_request_needs_the_identity_check(app, admin_client):
    with app.app_context():
        client = make_client(first_name="Anna", last_name="Kowalczyk")
        data_request = make_request(RequestKind.ERASURE, client=client)
        client_id, request_id = client.id, data_request.id
    page = admin_client.get(f"/clients/{client_id}/erase?request_id={request_id}")
    assert "identity was checked" in page.get_data(as_text=True)
    refused = admin_client.post(
        f"/clients/{client_id}/erase",
        data={"confirmation": "Anna Kowalczyk", "request_id": request_id},
    )
    assert refused.status_code == 422
    assert admin_client.get(f"/clients/{client_id}/erase?request_id=x").status_code == 404
    with app.app_context():
        assert db.session.get(Client, client_id) is not None


def test_the_command_shows_what_would_go_and_erases_with_yes(app, admin):
    with app.app_context():
        client = make_client(
            first_name="Jiří", last_name="Novák", email="jiri@example.cz", phone=PHONE
        )
        client_id = client.id
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["erase", "client", str(client_id)])
    assert dry.exit_code != 0
    assert "Not erased: add --yes" in dry.output and "clients 1" in dry.output
    with app.app_context():
        assert db.session.get(Client, client_id) is not None
    missing = runner.invoke(args=["erase", "client", "999999", "--yes"])
    assert missing.exit_code != 0 and "No client 999999" in missing.output
    done = runner.invoke(
        args=["erase", "client", str(client_id), "--yes", "--by", "admin@example.com"]
    )
    assert done.exit_code == 0, done.output
    assert f"Client {client_id} erased" in done.output
    with app.app_context():
        assert db.session.get(Client, client_id) is None
        erasure = db.session.scalar(sa.select(Erasure).where(Erasure.subject_ref == client_id))
        assert erasure.erased_by is not None and erasure.erased_by.email == "admin@example.com"


def test_files_of_attachments_and_exports_go_after_the_commit(app):
    """The rows go in the erasure's transaction; the files only once it committed, so a
    failed commit never leaves rows pointing at missing files."""
    from crm.privacy import export as exports
    from crm.privacy.erasure import erase_client
    from crm.privacy.models import DataExport
    from tests.privacy.export_data import add_attachment

    with app.test_request_context():
        by = make_user("eraser@example.com")
        client = make_client(first_name="Věra", last_name="Šťastná", email="vera@example.cz")
        add_attachment(client.id, "Smlouva Šťastná.txt", b"Smlouva\n", "text/plain")
        export = DataExport(client_id=client.id, requested_by_id=by.id)
        db.session.add(export)
        db.session.commit()
        export_id = export.id
        exports.run_export(export_id)
        export_file = exports.export_root() / db.session.get(DataExport, export_id).file_name
        assert export_file.exists()

        result = erase_client(db.session.get(Client, client.id), by)
        assert export_file.exists() and result.storage_keys  # nothing removed yet
        db.session.commit()
        result.after_commit()
        assert not export_file.exists()
        assert db.session.get(DataExport, export_id) is None
