"""After erasure, no table or column of the database holds the client's name, email
address, phone number or personal custom values: every table and column is read
from the database itself (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import sqlalchemy as sa

from crm.audit.services import verify_chain
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import Suppression
from tests.campaigns.conftest import smtp, smtp_server  # noqa: F401 (fixtures)
from tests.privacy.erasure_factories import EMAIL, PHONE, scan_database, seed_rich_client


def test_nothing_of_the_person_is_left_but_the_suppression_hashes(app, admin_client, admin, smtp):  # noqa: F811
    with app.app_context():
        seeded = seed_rich_client(app, admin_client)
        before = scan_database()
        tables = {table for table, _column, _needle in before}
        # The seeding put the person in every kind of place the scan must look at.
        assert {
            "clients",
            "notes",
            "attachments",
            "tasks",
            "deals",
            "consent_events",
            "campaign_deliveries",
            "sent_messages",
            "audit_entries",
            "privacy_requests",
        } <= tables, tables
        assert seeded.export_file.exists() and seeded.attachment_file.exists()

    response = admin_client.post(
        f"/clients/{seeded.client_id}/erase",
        data={
            "confirmation": "  żaneta   BRZĘCZYSZCZYKIEWICZ ",
            "request_id": seeded.erasure_request_id,
        },
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    assert response.headers["Location"].endswith(f"/privacy/requests/{seeded.erasure_request_id}")

    with app.app_context():
        assert scan_database() == []
        assert not seeded.export_file.exists()
        assert not seeded.attachment_file.exists()
        # What is kept: the suppression hashes (keyed), the request, other clients.
        rows = db.session.execute(sa.select(Suppression.kind, Suppression.email_hash)).all()
        assert ("email", mailing.suppression_hash(EMAIL)) in rows
        assert ("phone", mailing.phone_suppression_hash(PHONE)) in rows
        assert mailing.is_suppressed(EMAIL) and mailing.is_phone_suppressed("601 234 567")
        names = db.session.execute(sa.text("SELECT last_name FROM clients")).scalars().all()
        assert names == ["Nowak"]
        result = verify_chain()
        assert result.ok, result
        assert result.redacted > 0
