"""A richly seeded client for the erasure and restriction tests, and the every-column
scan of the database.

The client is made through the app's own routes and services wherever one exists, so
the audit entries, histories and stored messages are the ones real use leaves."""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import json
import zlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from flask.testing import FlaskClient

from crm.auth.models import User
from crm.campaigns import services as campaigns
from crm.campaigns.models import Campaign
from crm.clients.models import Client
from crm.consents import services as ledger
from crm.consents.models import EventKind, Method
from crm.deals import services as deals
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import EventSource
from crm.privacy.models import DataExport, ExportStatus, RequestKind
from tests.campaigns.conftest import make_campaign, make_list
from tests.conftest import make_client, make_field
from tests.consents.factories import make_purpose
from tests.privacy.conftest import make_request

FIRST = "Żaneta"
LAST = "Brzęczyszczykiewicz"
EMAIL = "zaneta.brzeczyszczykiewicz@example.pl"
PHONE = "+48601234567"
PASSPORT = "PX7734512"
# What must not be found anywhere after erasure (compared ignoring case).
NEEDLES = (FIRST, LAST, f"{FIRST} {LAST}", EMAIL, PHONE, "601234567", "601 234 567", PASSPORT)


@dataclass
class Seeded:
    client_id: int
    other_id: int
    list_id: int
    campaign_id: int
    erasure_request_id: int
    unlinked_request_id: int
    export_file: Path
    attachment_file: Path
    admin_id: int


def seed_rich_client(
    app: Flask, http: FlaskClient, admin_email: str = "admin@example.com"
) -> Seeded:
    """The client with everything a card can hold, made by the admin signed in on
    `http`. Call inside an app context; commits."""
    admin = db.session.scalar(sa.select(User).where(User.email == admin_email))
    assert admin is not None
    passport = make_field("Passport number", "text", personal_data=True)
    tier = make_field("Tier", "text", personal_data=False)
    client = make_client(
        first_name="Zaneta",  # renamed below through the card, so a diff holds both
        last_name=LAST,
        email=EMAIL,
        phone=PHONE,
        street="ul. Piotrkowska 1",
        city="Łódź",
        custom={passport.key: PASSPORT, tier.key: "Gold"},
    )
    other = make_client(first_name="Marek", last_name="Nowak", email="marek.nowak@example.pl")
    client_id, other_id = client.id, other.id
    mlist = make_list("Newsletter")
    sms = make_purpose("SMS reminders", channels=["sms"])
    admin_id = admin.id

    # The card: a view, an inline edit of the name (a diff), a note, a file, a task.
    assert http.get(f"/clients/{client_id}").status_code == 200
    response = http.post(
        f"/clients/{client_id}/groups/name/edit",
        data={"first_name": FIRST, "last_name": LAST, "company": f"{LAST} Atelier"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    response = http.post(
        f"/clients/{client_id}/notes",
        data={"kind": "call", "body": f"{FIRST} {LAST} called from 601 234 567 ({EMAIL})."},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    pdf = b"%PDF-1.4\n" + f"Umowa: {FIRST} {LAST}, {EMAIL}".encode() + b"\n%%EOF\n"
    response = http.post(
        f"/clients/{client_id}/attachments",
        data={"file": (io.BytesIO(pdf), f"{LAST}-umowa.pdf")},
        content_type="multipart/form-data",
    )
    assert response.status_code in (200, 303), response.get_data(as_text=True)
    response = http.post(
        f"/tasks/clients/{client_id}/new",
        data={"title": f"Call {FIRST} back", "details": EMAIL, "assignee_id": str(admin_id)},
    )
    assert response.status_code in (200, 302, 303), response.get_data(as_text=True)

    db.session.expire_all()
    client = db.session.get(Client, client_id)
    admin = db.session.get(User, admin_id)
    # Consents with events, a subscription with history, a deal.
    ledger.record_event(
        client_id,
        sms,
        EventKind.GIVEN,
        Method.PHONE,
        notice=ledger.latest_notices(sms.id)[next(iter(ledger.latest_notices(sms.id)))],
        actor=admin,
        note=f"Said yes on {PHONE}",
    )
    sub = mailing.subscribe(client, mlist, source=EventSource.STAFF, actor=admin)
    mailing.unsubscribe(sub, actor=admin)
    mailing.subscribe(client, mlist, source=EventSource.STAFF, actor=admin)
    stage = deals.all_stages()[0]
    deals.create_deal(
        title=f"Wedding of {FIRST} {LAST}",
        client_id=client_id,
        stage_id=stage.id,
        currency="PLN",
        owner_id=admin_id,
    )
    db.session.commit()

    # A campaign sent to the list (a delivery and a stored message), and a test send
    # to the client's address (an audit entry without a client).
    campaign = make_campaign([mlist.id])
    campaign_id = campaign.id
    campaigns.start_sending(campaign, admin)
    db.session.commit()
    assert campaigns.work_on_campaign(campaign_id) == "done"
    campaigns.send_test(db.session.get(Campaign, campaign_id), EMAIL, admin)
    db.session.commit()

    # Requests: an erasure request about the client, an access request not linked to
    # any card that names the person, and a restriction lifted again.
    erasure_request = make_request(
        RequestKind.ERASURE,
        client=client,
        requester=f"{FIRST} {LAST}",
        details=f"Wrote from {EMAIL}: delete everything.",
        identity_check=f"Called back on {PHONE}, confirmed the passport {PASSPORT}.",
        received_on=date.today(),
    )
    unlinked = make_request(
        RequestKind.ACCESS,
        requester=f"{FIRST} {LAST}",
        details=f"Asked by phone ({PHONE}) what we hold.",
        received_on=date.today(),
    )
    response = http.post(
        f"/clients/{client_id}/restriction",
        data={"reason": f"{FIRST} contests the phone number {PHONE}"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    response = http.post(f"/clients/{client_id}/restriction", data={})
    assert response.status_code == 302, response.get_data(as_text=True)

    # An appointment booked through the calendar's service (audited), with a note
    # naming the person.
    from crm.appointments import services as appointments
    from tests.appointments.factories import every_day, local, make_service, next_week

    every_day(admin_id)
    service = make_service([admin_id], name="Konsultacja")
    appointments.book(
        service=service,
        staff_id=admin_id,
        client_id=client_id,
        starts_at=local(next_week(), 10),
        notes=f"{FIRST} {LAST}, tel. {PHONE}",
        created_by=db.session.get(User, admin_id),
    )
    db.session.commit()

    # A finished export with its file.
    export_dir = Path(current_app.config["CRM_EXPORT_DIR"])
    export_dir.mkdir(parents=True, exist_ok=True)
    export_file = export_dir / f"export-{client_id}-test.zip"
    export_file.write_bytes(f"{FIRST} {LAST} {EMAIL}".encode())
    db.session.add(
        DataExport(
            client_id=client_id,
            requested_by_id=admin_id,
            status=ExportStatus.DONE.value,
            progress=100,
            file_name=export_file.name,
            size=export_file.stat().st_size,
        )
    )
    db.session.commit()
    from crm.attachments.models import Attachment
    from crm.attachments.services import storage_path

    key = db.session.scalar(
        sa.select(Attachment.storage_key).where(Attachment.client_id == client_id)
    )
    return Seeded(
        client_id=client_id,
        other_id=other_id,
        list_id=mlist.id,
        campaign_id=campaign_id,
        erasure_request_id=erasure_request.id,
        unlinked_request_id=unlinked.id,
        export_file=export_file,
        attachment_file=storage_path(key),
        admin_id=admin_id,
    )


# --- the scan ---------------------------------------------------------------------------------


def _texts_of_blob(value: bytes) -> list[str]:
    """A blob as text, and, when it is zlib data (stored messages), decompressed; an
    email is also read part by part, decoded (names in headers and bodies are encoded
    on the wire)."""
    texts = [value.decode("utf-8", "ignore")]
    try:
        value = zlib.decompress(value)
    except zlib.error:
        return texts
    texts.append(value.decode("utf-8", "ignore"))
    message = email.message_from_bytes(value, policy=email.policy.default)
    for name, header in message.items():
        texts.append(f"{name}: {header}")
    for part in message.walk():
        if part.get_content_maintype() == "text":
            texts.append(str(part.get_content()))
    return texts


def _texts_of(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes | bytearray | memoryview):
        return _texts_of_blob(bytes(value))
    if isinstance(value, dict | list):
        return [json.dumps(value, ensure_ascii=False)]
    text = str(value)
    texts = [text]
    # JSON stored as text (SQLite) escapes non-ASCII characters.
    with contextlib.suppress(ValueError, TypeError):
        texts.append(json.dumps(json.loads(text), ensure_ascii=False))
    return texts


def scan_database(needles: tuple[str, ...] = NEEDLES) -> list[tuple[str, str, str]]:
    """Every text, JSON and binary column of every table (introspected from the
    database, not the models: alembic_version and anything else included), searched
    for the needles ignoring case. Returns (table, column, needle) for each hit."""
    connection = db.session.connection()
    inspector = sa.inspect(connection)
    wanted = [(n, n.casefold()) for n in needles]
    hits: list[tuple[str, str, str]] = []
    for table_name in inspector.get_table_names():
        columns = [
            c["name"]
            for c in inspector.get_columns(table_name)
            if isinstance(c["type"], sa.String | sa.JSON | sa.LargeBinary | sa.types.NullType)
            or c["type"].__class__.__name__.upper() in {"JSONB", "BYTEA", "BLOB", "TSVECTOR"}
        ]
        if not columns:
            continue
        table = sa.table(table_name, *(sa.column(c) for c in columns))
        for row in connection.execute(sa.select(*table.c)):
            for column, value in zip(columns, row, strict=True):
                for text in _texts_of(value):
                    folded = text.casefold()
                    for needle, folded_needle in wanted:
                        if folded_needle in folded:
                            hits.append((table_name, column, needle))
    return sorted(set(hits))
