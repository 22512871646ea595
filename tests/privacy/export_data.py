"""A demo client for the export tests: consents with history, a list subscription,
emails sent (kept as their exact bytes), notes, a task, a deal and two files, with
diacritics everywhere and a value that looks like a spreadsheet formula."""

from __future__ import annotations

import hashlib
import secrets
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from crm.extensions import db

FORMULA = '=HYPERLINK("http://x","y")'
SENT_AT = datetime(2026, 11, 3, 9, 15, tzinfo=UTC)


@dataclass
class DemoClient:
    client_id: int
    messages: dict[str, bytes] = field(default_factory=dict)  # Message-ID -> bytes sent
    subjects: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # file name -> content
    purpose_name: str = ""
    list_name: str = ""
    appointment_service: str = ""


def message_bytes(to: str, subject: str, body: str, sent_at: datetime) -> tuple[str, bytes]:
    message = EmailMessage()
    message["From"] = "Salon Łódź <biuro@example.pl>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(sent_at)
    message_id = make_msgid(domain="example.pl")
    message["Message-ID"] = message_id
    message.set_content(body)
    message.add_alternative(f"<p>{body}</p>", subtype="html")
    return message_id, message.as_bytes()


def add_sent_message(
    client_id: int, to: str, subject: str, body: str, sent_at: datetime
) -> tuple[str, bytes]:
    from crm.campaigns.models import SentMessage

    message_id, raw = message_bytes(to, subject, body, sent_at)
    db.session.add(
        SentMessage(
            client_id=client_id,
            subject=subject,
            email=to,
            message_id=message_id,
            sent_at=sent_at,
            raw=zlib.compress(raw),
        )
    )
    return message_id, raw


def add_attachment(client_id: int, filename: str, content: bytes, content_type: str) -> None:
    from crm.attachments.models import Attachment
    from crm.attachments.services import storage_path

    key = secrets.token_hex(16)
    path = storage_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    db.session.add(
        Attachment(
            client_id=client_id,
            filename=filename,
            content_type=content_type,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            storage_key=key,
        )
    )


def make_demo_client(tag: str | None = None, **values: Any) -> DemoClient:
    """Commits the rows; call inside an app context."""
    from crm.appointments.models import Appointment
    from crm.consents import services as consents
    from crm.consents.models import EventKind, LegalBasis, Method
    from crm.consents.services import PurposeSpec
    from crm.deals.models import Deal
    from crm.deals.services import create_stage
    from crm.fields.models import FieldType
    from crm.fields.services import FieldSpec, create_field
    from crm.mailing import services as mailing
    from crm.mailing.models import Subscription, SubscriptionEvent
    from crm.notes.models import Note
    from crm.tasks.models import Task
    from tests.appointments.factories import make_service
    from tests.conftest import make_client, make_user

    tag = tag or uuid.uuid4().hex[:6]
    email = f"jurgen.{tag}@example.de"
    values.setdefault("first_name", "Jürgen")
    values.setdefault("last_name", "Müller-Dvořák")
    values.setdefault("company", FORMULA)
    values.setdefault("city", "Łódź")
    values.setdefault("street", "ul. Piotrkowska 1")
    values.setdefault("email", email)
    values.setdefault("phone", "+48600100200")
    field_spec = FieldSpec(label=f"Ulubiony salon {tag}", field_type=FieldType.TEXT, choices=[])
    custom_field = create_field(field_spec)
    db.session.commit()
    values.setdefault("custom", {custom_field.key: "Šťastný Łódź"})
    client = make_client(**values)

    purpose_name = f"Newsletter {tag}"
    purpose = consents.create_purpose(
        PurposeSpec(
            name=purpose_name,
            legal_basis=LegalBasis.CONSENT,
            retention_months=12,
            channels=["email"],
            data_categories="imię, adres e-mail",
            recipients="Wysyłka: Example Mail sp. z o.o.",
        ),
        {"en": "Our newsletter once a month.", "pl": "Nasz newsletter raz w miesiącu – Łódź."},
        None,
    )
    db.session.commit()
    notice = consents.latest_notices(purpose.id)["pl"]
    given = SENT_AT - timedelta(days=60)
    consents.record_event(
        client.id, purpose, EventKind.GIVEN, Method.WEB_FORM, now=given, notice=notice
    )
    consents.record_event(
        client.id, purpose, EventKind.WITHDRAWN, Method.EMAIL, now=given + timedelta(days=10)
    )
    consents.record_event(
        client.id,
        purpose,
        EventKind.GIVEN,
        Method.PHONE,
        now=given + timedelta(days=20),
        notice=notice,
    )
    db.session.commit()

    list_name = f"Nowości {tag}"
    mlist = mailing.create_list(mailing.ListSpec(name=list_name, purpose_id=purpose.id), None)
    db.session.commit()
    # Rows straight through the models: the membership and its history are what the
    # export reads (subscribing through the service is tested with mailing).
    subscription = Subscription(
        client_id=client.id, list_id=mlist.id, status="confirmed", created_at=given
    )
    db.session.add(subscription)
    db.session.flush()
    db.session.add(
        SubscriptionEvent(
            subscription_id=subscription.id,
            client_id=client.id,
            list_id=mlist.id,
            old_status="",
            status="confirmed",
            occurred_at=given,
            source="page",
            ip="192.0.2.0",
            user_agent="Mozilla/5.0 (Łódź)",
        )
    )
    db.session.commit()

    demo = DemoClient(client.id, purpose_name=purpose_name, list_name=list_name)
    for n, subject in enumerate(
        ["Zaproszenie do Łodzi", "Grüße aus München", "Dvořák / Šťastný: nabídka?"]
    ):
        message_id, raw = add_sent_message(
            client.id,
            email,
            subject,
            f"Dzień dobry, {client.first_name}! ({n})",
            SENT_AT + timedelta(days=n),
        )
        demo.messages[message_id] = raw
        demo.subjects.append(subject)
    db.session.add_all(
        [
            Note(client_id=client.id, body="Rozmowa o wizycie w Łodzi.", occurred_at=SENT_AT),
            Note(client_id=client.id, kind="call", body=FORMULA, occurred_at=SENT_AT),
            Task(client_id=client.id, title="Oddzwonić – Müller"),
        ]
    )
    stage = create_stage(f"Oferta {tag}", "open")
    db.session.add(Deal(client_id=client.id, title="Pakiet Šťastný", stage_id=stage.id, amount=199))
    demo.files = {
        "Umowa Łódź Müller.txt": "Smlouva – Dvořák, Šťastný\n".encode(),
        "skan.pdf": b"%PDF-1.4\n% demo\n",
    }
    add_attachment(
        client.id, "Umowa Łódź Müller.txt", demo.files["Umowa Łódź Müller.txt"], "text/plain"
    )
    staff = make_user(f"kasia.{tag}@example.pl", role="sales", name="Kasia Wiśniewska")
    service = make_service([staff.id], name=f"Strzyżenie Łódź {tag}")
    db.session.add(
        Appointment(
            service_id=service.id,
            staff_id=staff.id,
            client_id=client.id,
            starts_at=SENT_AT + timedelta(days=30),
            ends_at=SENT_AT + timedelta(days=30, hours=1),
            status="confirmed",
            notes="Prosi o fryzjerkę Dvořákovą.",
        )
    )
    demo.appointment_service = service.name
    add_attachment(client.id, "skan.pdf", demo.files["skan.pdf"], "application/pdf")
    db.session.commit()
    return demo
