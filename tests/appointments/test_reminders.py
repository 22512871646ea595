"""Appointment reminders: planning, the sweep and the sender, with an injected clock.

The sweep (`sweep(now)`) and the sender (`deliver_claimed(ids, claim, now)`) are called
with explicit times; messages land in a per-test outbox, counted file by file."""

from __future__ import annotations

import email
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select

import crm.queue
from crm.appointments import reminders, services
from crm.appointments.models import (
    Appointment,
    AppointmentSource,
    Reminder,
    ReminderStatus,
    Service,
)
from crm.appointments.tasks import QUEUE, deliver_claimed, send_reminders, sweep
from crm.audit.models import AuditEntry
from crm.campaigns.models import SentMessage
from crm.clients.models import Client
from crm.config import normalise_database_url
from crm.consents.models import ConsentEvent, EventKind, LegalBasis, Method
from crm.consents.services import latest_notices, record_event
from crm.extensions import db
from crm.sms import SmsPermanentError, SmsTemporaryError
from tests.appointments.factories import WARSAW, admin_id, every_day, local, make_service
from tests.conftest import BACKENDS, PG_URL, login, make_client, make_test_app, make_user

PHONE = "+48 601 234 567"


@pytest.fixture
def outbox(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outbox"
    monkeypatch.setitem(app.config, "CRM_OUTBOX_DIR", str(folder))
    _drain()
    return folder


def _drain() -> list[dramatiq.Message]:
    queue = crm.queue.broker.queues[QUEUE]
    found = []
    while not queue.empty():
        found.append(dramatiq.Message.decode(queue.get_nowait()))
        queue.task_done()
    return found


def sms_files(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text("utf-8")) for p in sorted(folder.glob("*.sms.json"))]


def eml_files(folder: Path) -> list[email.message.Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def run(now: datetime) -> dict[str, int]:
    """One job run at `now`, then the worker's part for every batch it enqueued."""
    stats = sweep(now)
    db.session.commit()
    for message in _drain():
        ids, claim = message.args
        deliver_claimed(ids, datetime.fromisoformat(claim), now)
    return stats


def next_day(days: int = 7) -> date:
    return datetime.now(WARSAW).date() + timedelta(days=days)


@pytest.fixture
def world(app: Flask, admin, outbox: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with app.app_context():
        staff = admin_id()
        every_day(staff)
        service = make_service([staff], name="Masaż leczniczy", reminder_hour=18)
        client = make_client(first_name="Jürgen", last_name="Müller", email="jm@example.com")
        client.phone = PHONE
        db.session.commit()
        reminders.record_reminders_basis(
            client, method=Method.STAFF, evidence=None, actor=None, agreed=False
        )
        db.session.commit()
        return {"staff": staff, "service": service.id, "client": client.id}


def book(world: dict[str, Any], start: datetime, now: datetime, **extra: Any) -> int:
    db.session.commit()
    appointment = services.book(
        service=db.session.get(Service, world["service"]),
        staff_id=world["staff"],
        client_id=extra.pop("client_id", world["client"]),
        starts_at=start.astimezone(UTC),
        now=now,
        **extra,
    )
    db.session.commit()
    return appointment.id


def rows(appointment_id: int) -> dict[tuple[str, str], Reminder]:
    found = db.session.scalars(select(Reminder).where(Reminder.appointment_id == appointment_id))
    return {(r.kind, r.channel): r for r in found}


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# --- planning and sending ----------------------------------------------------------------


def test_confirmation_at_once_and_day_before_at_the_set_hour(app, world, outbox):
    day = next_day()
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(day, 10), now)
        planned = rows(aid)
        assert set(planned) == {
            ("confirmation", "email"),
            ("confirmation", "sms"),
            ("before", "email"),
            ("before", "sms"),
        }
        assert aware(planned["confirmation", "sms"].due_at) == now
        before = local(day - timedelta(days=1), 18).astimezone(UTC)
        assert aware(planned["before", "email"].due_at) == before
        assert db.session.scalar(select(Appointment.public_token).where(Appointment.id == aid))

        assert run(now)["claimed"] == 2  # the confirmations, at once
        assert len(sms_files(outbox)) == 1 and len(eml_files(outbox)) == 1
        assert run(now + timedelta(hours=1))["claimed"] == 0
        assert run(before - timedelta(seconds=1))["claimed"] == 0
        assert run(before)["claimed"] == 2
        assert len(sms_files(outbox)) == 2 and len(eml_files(outbox)) == 2
        assert run(before + timedelta(minutes=5))["claimed"] == 0  # never twice
        statuses = {k: r.status for k, r in rows(aid).items()}
        assert set(statuses.values()) == {"sent"}


def test_sms_names_the_business_and_how_to_stop(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        from crm.org.services import organisation_for_update

        organisation_for_update().name = "Gabinet Łódź-Bałuty"
        db.session.commit()
        book(world, local(next_day(), 10), now)
        run(now)
        (sms,) = sms_files(outbox)
    assert sms["to"] == "+48601234567"
    body = sms["body"]
    assert body.startswith("Gabinet Łódź-Bałuty")
    assert "Masaż leczniczy" in body and "ul. Piotrkowska 1, Łódź" in body
    assert "Stop SMS: http" in body and "/sms/stop/" in body
    assert sms["reference"].startswith("reminder-")
    # Nothing in it but the appointment: no client name, no offers.
    assert "Müller" not in body


def test_confirmation_email_is_stored_with_its_ics(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        run(now)
        (message,) = eml_files(outbox)
        stored = db.session.scalars(select(SentMessage)).all()
        assert len(stored) == 1
        saved = stored[0]
        assert saved.client_id == world["client"] and saved.campaign_id is None
        assert saved.email == "jm@example.com"
        parsed = email.message_from_bytes(saved.eml())
        assert parsed["Message-ID"] == message["Message-ID"]
        parts = {p.get_content_type(): p for p in parsed.walk()}
        assert "text/calendar" in parts
        ics = parts["text/calendar"].get_payload(decode=True).decode("utf-8")
        assert "BEGIN:VEVENT" in ics and "Masaż leczniczy" in ics
        text = parts["text/plain"].get_payload(decode=True).decode("utf-8")
        assert "Jürgen Müller" in text and "ul. Piotrkowska 1, Łódź" in text
        assert aid


def test_online_bookings_get_no_confirmation_email_from_here(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now, source=AppointmentSource.ONLINE)
        assert set(rows(aid)) == {
            ("confirmation", "sms"),
            ("before", "email"),
            ("before", "sms"),
        }


def test_service_settings_shape_the_plan(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        staff = world["staff"]
        quiet = make_service(
            [staff],
            name="Bez przypomnień",
            reminder_channels=["email"],
            send_confirmation=False,
            reminder_days_before=2,
            reminder_hour=9,
        )
        db.session.commit()
        appointment = services.book(
            service=quiet,
            staff_id=staff,
            client_id=world["client"],
            starts_at=local(next_day(), 12).astimezone(UTC),
            now=now,
        )
        db.session.commit()
        planned = rows(appointment.id)
        assert set(planned) == {("before", "email")}
        due = local(next_day() - timedelta(days=2), 9).astimezone(UTC)
        assert aware(planned["before", "email"].due_at) == due
        # A reminder whose time has already passed is not planned at all.
        soon = services.book(
            service=quiet,
            staff_id=staff,
            client_id=world["client"],
            starts_at=local(next_day(1), 12).astimezone(UTC),
            now=now,
        )
        db.session.commit()
        assert rows(soon.id) == {}


def test_day_before_is_dst_correct(app, ctx):
    service = Service(reminder_days_before=1, reminder_hour=18)
    # Europe/Warsaw moves to summer time on 31 March 2030.
    appointment = Appointment(starts_at=datetime(2030, 4, 1, 8, 0, tzinfo=UTC))
    assert reminders.before_due_at(appointment, service) == datetime(2030, 3, 31, 16, tzinfo=UTC)
    appointment.starts_at = datetime(2030, 3, 31, 8, 0, tzinfo=UTC)
    assert reminders.before_due_at(appointment, service) == datetime(2030, 3, 30, 17, tzinfo=UTC)
    service.reminder_hour = 2  # 2:00 does not exist on 31 March: the first instant after
    appointment.starts_at = datetime(2030, 4, 1, 8, 0, tzinfo=UTC)
    assert reminders.before_due_at(appointment, service) == datetime(2030, 3, 31, 1, tzinfo=UTC)
    service.reminder_days_before = 0
    assert reminders.before_due_at(appointment, service) is None


# --- cancel, reschedule ------------------------------------------------------------------


def test_cancelled_appointment_sends_nothing_more(app, world, outbox):
    day = next_day()
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(day, 10), now)
        run(now)
        services.cancel(db.session.get(Appointment, aid), now + timedelta(minutes=5))
        db.session.commit()
        planned = rows(aid)
        assert planned["before", "sms"].status == "cancelled"
        assert planned["confirmation", "sms"].status == "sent"
        assert run(local(day - timedelta(days=1), 18))["claimed"] == 0
        assert len(sms_files(outbox)) == 1


def test_cancel_between_claim_and_send(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        sweep(now)
        db.session.commit()
        (message,) = _drain()
        services.cancel(db.session.get(Appointment, aid), now)
        db.session.commit()
        ids, claim = message.args
        deliver_claimed(ids, datetime.fromisoformat(claim), now)
        assert sms_files(outbox) == [] and eml_files(outbox) == []
        assert {r.status for r in rows(aid).values()} == {"cancelled"}


def test_reschedule_moves_the_day_before_and_keeps_one_confirmation(app, world, outbox):
    day = next_day()
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(day, 10), now)
        run(now)
        old_due = local(day - timedelta(days=1), 18).astimezone(UTC)
        new_day = day + timedelta(days=3)
        services.reschedule(
            db.session.get(Appointment, aid),
            current_staff_id=world["staff"],
            staff_id=world["staff"],
            starts_at=local(new_day, 11).astimezone(UTC),
            now=now + timedelta(hours=1),
        )
        db.session.commit()
        new_due = local(new_day - timedelta(days=1), 18).astimezone(UTC)
        planned = rows(aid)
        assert aware(planned["before", "sms"].due_at) == new_due
        assert planned["before", "sms"].status == "scheduled"
        assert planned["confirmation", "sms"].status == "sent"
        assert run(old_due)["claimed"] == 0
        assert run(new_due)["claimed"] == 2
        assert len(sms_files(outbox)) == 2  # one confirmation, one reminder
        # Moved again after its reminder went out: a reminder for the new time.
        later = new_day + timedelta(days=2)
        services.reschedule(
            db.session.get(Appointment, aid),
            current_staff_id=world["staff"],
            staff_id=world["staff"],
            starts_at=local(later, 11).astimezone(UTC),
            now=new_due + timedelta(minutes=1),
        )
        db.session.commit()
        assert rows(aid)["before", "sms"].status == "scheduled"
        assert run(local(later - timedelta(days=1), 18).astimezone(UTC))["claimed"] == 2
        assert len(sms_files(outbox)) == 3


def test_move_between_claim_and_send_sends_nothing_stale(app, world, outbox):
    day = next_day()
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(day, 10), now)
        run(now)
        due = local(day - timedelta(days=1), 18).astimezone(UTC)
        sweep(due)
        db.session.commit()
        (message,) = _drain()
        services.reschedule(
            db.session.get(Appointment, aid),
            current_staff_id=world["staff"],
            staff_id=world["staff"],
            starts_at=local(day + timedelta(days=2), 11).astimezone(UTC),
            now=due,
        )
        db.session.commit()
        ids, claim = message.args
        deliver_claimed(ids, datetime.fromisoformat(claim), due)
        assert len(sms_files(outbox)) == 1  # only the confirmation
        assert rows(aid)["before", "sms"].status == "scheduled"


# --- opt-out, restriction, the ledger ----------------------------------------------------


def test_opt_out_stops_sms_at_once(app, world, outbox):
    day = next_day()
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(day, 10), now)
        other = book(world, local(day + timedelta(days=1), 10), now)
        client = db.session.get(Client, world["client"])
        assert reminders.set_sms_opt_out(client, True, now=now) == 4
        db.session.commit()
        assert rows(aid)["before", "sms"].status == "cancelled"
        assert rows(other)["confirmation", "sms"].detail == "SMS opt-out"
        run(local(day - timedelta(days=1), 18))
        run(local(day, 18))
        assert sms_files(outbox) == []
        assert len(eml_files(outbox)) == 4  # email goes on
        later = book(world, local(day + timedelta(days=2), 10), now)
        assert {c for _k, c in rows(later)} == {"email"}
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "client.sms_opt_out")
        )
        assert entry is not None and entry.client_id == world["client"]


def test_opt_out_after_the_claim_still_stops_the_sms(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        book(world, local(next_day(), 10), now)
        sweep(now)
        db.session.commit()
        (message,) = _drain()
        client = db.session.get(Client, world["client"])
        reminders.set_sms_opt_out(client, True, now=now)
        db.session.commit()
        ids, claim = message.args
        deliver_claimed(ids, datetime.fromisoformat(claim), now)
        assert sms_files(outbox) == [] and len(eml_files(outbox)) == 1


def test_restriction_is_honoured_at_send_time(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        client = db.session.get(Client, world["client"])
        client.restricted_at = now
        db.session.commit()
        run(now)
        assert sms_files(outbox) == [] and eml_files(outbox) == []
        planned = rows(aid)
        assert planned["confirmation", "sms"].status == "skipped"
        assert planned["confirmation", "email"].detail == "processing restricted"


def test_withdrawn_basis_is_honoured_and_not_regranted(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        purpose = reminders.reminders_purpose()
        record_event(world["client"], purpose, EventKind.WITHDRAWN, Method.STAFF, now=now)
        db.session.commit()
        run(now + timedelta(seconds=1))
        assert sms_files(outbox) == [] and eml_files(outbox) == []
        assert rows(aid)["confirmation", "sms"].status == "skipped"
        # Booking again records nothing new: the objection stands.
        client = db.session.get(Client, world["client"])
        assert not reminders.record_reminders_basis(
            client, method=Method.STAFF, evidence=None, actor=None, agreed=False
        )


def test_consent_basis_needs_agreement(app, world, admin, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        reminders.set_reminders_basis(LegalBasis.CONSENT, actor=None)
        db.session.commit()
        purpose = reminders.reminders_purpose()
        assert purpose.legal_basis == "a" and purpose.validity_months
        # The state recorded under legitimate interest no longer counts as consent.
        kinds = db.session.scalars(
            select(ConsentEvent.kind)
            .where(ConsentEvent.client_id == world["client"])
            .order_by(ConsentEvent.id)
        ).all()
        assert kinds == ["given", "invalidated"]
        aid = book(world, local(next_day(), 10), now)
        run(now)
        assert sms_files(outbox) == []
        client = db.session.get(Client, world["client"])
        assert not reminders.record_reminders_basis(
            client, method=Method.STAFF, evidence=None, actor=None, agreed=False
        )
        assert reminders.record_reminders_basis(
            client, method=Method.STAFF, evidence=None, actor=None, agreed=True
        )
        db.session.commit()
        assert rows(aid)["confirmation", "sms"].status == "skipped"
        run(local(next_day() - timedelta(days=1), 18))
        assert len(sms_files(outbox)) == 1  # the day-before one, now with consent
        with pytest.raises(ValueError):
            reminders.set_reminders_basis(LegalBasis.VITAL_INTERESTS, actor=None)


def test_purpose_is_created_once(app, ctx):
    first = reminders.reminders_purpose()
    assert first.key == "reminders" and first.legal_basis == "f"
    assert set(first.channels) == {"email", "sms"}
    assert reminders.reminders_purpose().id == first.id


# --- gateway trouble, dead workers, the actor -------------------------------------------


def test_temporary_gateway_error_is_retried_permanent_one_fails(app, world, outbox, monkeypatch):
    import crm.sms

    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        sweep(now)
        db.session.commit()
        (message,) = _drain()
        ids, claim = message.args
        real = crm.sms.send_sms

        def down(sms: Any, **kw: Any) -> Any:
            raise SmsTemporaryError("503", status=503, answer="busy", attempts=3)

        monkeypatch.setattr(crm.sms, "send_sms", down)
        with pytest.raises(SmsTemporaryError):
            deliver_claimed(ids, datetime.fromisoformat(claim), now)
        planned = rows(aid)
        assert planned["confirmation", "email"].status == "sent"  # the others went on
        assert planned["confirmation", "sms"].status == "sending"
        assert send_reminders.options["retry_when"](
            0, SmsTemporaryError("x", status=503, answer="", attempts=1)
        )
        monkeypatch.setattr(crm.sms, "send_sms", real)
        deliver_claimed(ids, datetime.fromisoformat(claim), now)  # the actor's retry
        assert rows(aid)["confirmation", "sms"].status == "sent"
        assert len(sms_files(outbox)) == 1 and len(eml_files(outbox)) == 1

        def refused(sms: Any, **kw: Any) -> Any:
            raise SmsPermanentError("400", status=400, answer="bad number", attempts=1)

        monkeypatch.setattr(crm.sms, "send_sms", refused)
        run(local(next_day() - timedelta(days=1), 18))
        assert rows(aid)["before", "sms"].status == "failed"


def test_claims_of_a_dead_worker_are_given_back(app, world, outbox):
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        sweep(now)
        db.session.commit()
        _drain()  # the worker died with its message
        assert run(now + timedelta(minutes=10))["claimed"] == 0
        stats = run(now + timedelta(minutes=61))
        assert stats["given_back"] == 2 and stats["claimed"] == 2
        assert {r.status for k, r in rows(aid).items() if k[0] == "confirmation"} == {"sent"}
        assert len(sms_files(outbox)) == 1


def test_the_job_and_the_actor_through_a_worker(app, world, outbox):
    from crm.scheduler import get_job
    from crm.scheduler.runner import run_job

    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(next_day(), 10), now)
        job = get_job("appointments.reminders")
        assert job is not None and job.every == timedelta(minutes=1)
        assert run_job(job, now + timedelta(seconds=1)).ok
    worker = dramatiq.Worker(crm.queue.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        crm.queue.broker.join(QUEUE, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    with app.app_context():
        assert {r.status for k, r in rows(aid).items() if k[0] == "confirmation"} == {"sent"}
    assert len(sms_files(outbox)) == 1 and len(eml_files(outbox)) == 1


# --- two sweeps at once, on a database of their own --------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def own_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """Real concurrent connections need committed rows: a database outside the tests'
    rolled-back transaction."""
    tmp = tmp_path_factory.mktemp("reminder-race")
    admin_engine = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'race.sqlite3'}"
    else:
        admin_url = normalise_database_url(PG_URL or "")
        name = f"crm_remind_{uuid.uuid4().hex[:10]}"
        admin_engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    os.environ.setdefault("CRM_INSTANCE_PATH", str(tmp_path_factory.mktemp("instance")))
    app = make_test_app(url, tmp)
    with app.app_context():
        upgrade()
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        if admin_engine is not None:
            with admin_engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin_engine.dispose()


def test_two_overlapping_sweeps_send_each_reminder_once(own_db: Flask) -> None:
    app = own_db
    count = 120
    with app.app_context():
        from crm.auth.services import create_user

        staff = create_user("race@example.com", "correct horse battery staple", "admin")
        db.session.commit()
        service = make_service([staff.id], name="Wyścig", send_confirmation=False)
        start = datetime.now(UTC) + timedelta(days=3)
        due = datetime.now(UTC) - timedelta(minutes=1)
        clients = [
            Client(first_name="Zoë", last_name=f"Dvořák {n}", phone=f"+48601{n:06d}")
            for n in range(count)
        ]
        db.session.add_all(clients)
        db.session.flush()
        reminders_purpose = reminders.reminders_purpose()
        notice = latest_notices(reminders_purpose.id)["en"]
        for c in clients:
            c.refresh_search_text()
            record_event(
                c.id,
                reminders_purpose,
                EventKind.GIVEN,
                Method.STAFF,
                notice=notice,
            )
        appointments = [
            Appointment(
                service_id=service.id,
                staff_id=staff.id,
                client_id=c.id,
                starts_at=start + timedelta(minutes=n),
                ends_at=start + timedelta(minutes=n + 30),
            )
            for n, c in enumerate(clients)
        ]
        db.session.add_all(appointments)
        db.session.flush()
        db.session.add_all(
            Reminder(appointment_id=a.id, kind="confirmation", channel="sms", due_at=due)
            for a in appointments
        )
        db.session.commit()
    outbox = Path(app.config["CRM_OUTBOX_DIR"])
    _drain()
    barrier = threading.Barrier(2)
    claimed: list[int] = []
    errors: list[BaseException] = []

    def one_run() -> None:
        try:
            with app.app_context():
                barrier.wait()
                stats = sweep(datetime.now(UTC), batch=7)
                db.session.commit()
                claimed.append(stats["claimed"])
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(claimed) == count
    messages = _drain()
    # Two workers at once, each also handed every message a second time (redelivery).
    batches = [(m.args[0], m.args[1]) for m in messages]

    def work(order: list[tuple[list[int], str]]) -> None:
        try:
            with app.app_context():
                for ids, claim in order:
                    deliver_claimed(ids, datetime.fromisoformat(claim))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    workers = [
        threading.Thread(target=work, args=(batches,)),
        threading.Thread(target=work, args=(list(reversed(batches)),)),
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not errors, errors
    sent = sms_files(outbox)
    references = [s["reference"] for s in sent]
    assert len(references) == count and len(set(references)) == count
    with app.app_context():
        assert (
            db.session.scalar(
                select(func.count()).select_from(Reminder).where(Reminder.status == "sent")
            )
            == count
        )


# --- pages -------------------------------------------------------------------------------


def test_stop_page(app, world, client):
    with app.app_context():
        token = reminders.stop_token(world["client"])
        url = reminders.stop_url(world["client"])
    assert url.endswith(f"/sms/stop/{token}") and len(token) < 40
    page = client.get(f"/sms/stop/{token}")
    assert page.status_code == 200 and "Stop SMS" in page.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Client, world["client"]).sms_opt_out_at is None  # GET: nothing
    done = client.post(f"/sms/stop/{token}")
    assert done.status_code == 200 and "no more SMS" in done.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Client, world["client"]).sms_opt_out_at is not None
    assert client.post(f"/sms/stop/{token}").status_code == 200  # twice: still fine
    assert client.get(f"/sms/stop/{token[:-2]}xx").status_code == 400
    assert client.post(f"/sms/stop/{token}x").status_code == 400
    assert client.get("/sms/stop/" + "a" * 300).status_code == 400


def test_card_shows_reminders_and_toggles_the_opt_out(app, world, admin_client):
    now = datetime.now(UTC)
    with app.app_context():
        book(world, local(next_day(), 10), now)
        run(now)
    cid = world["client"]
    section = admin_client.get(f"/appointments/client/{cid}").get_data(as_text=True)
    assert "SMS sent" in section and "Email scheduled" in section
    assert "Stop SMS to this client" in section
    response = admin_client.post(
        f"/appointments/client/{cid}/sms-opt-out",
        data={"opt_out": "1"},
        headers={"HX-Request": "true"},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "1 planned SMS cancelled" in html
    assert "Allow SMS again" in html and "SMS cancelled" in html
    back = admin_client.post(f"/appointments/client/{cid}/sms-opt-out", data={"opt_out": "0"})
    assert back.status_code == 302 and back.headers["Location"].endswith("#appointments")
    with app.app_context():
        assert db.session.get(Client, cid).sms_opt_out_at is None
    assert (
        admin_client.post(
            f"/appointments/client/{cid}/sms-opt-out", data={"opt_out": "x"}
        ).status_code
        == 400
    )


def test_toggle_needs_the_edit_permission(app, world, client):
    with app.app_context():
        make_user("ro@example.com", "readonly", "Rita Readonly")
    login(client, "ro@example.com")
    cid = world["client"]
    assert client.get(f"/appointments/client/{cid}").status_code == 200
    assert (
        client.post(f"/appointments/client/{cid}/sms-opt-out", data={"opt_out": "1"}).status_code
        == 403
    )


def test_staff_booking_records_the_basis_or_asks_for_consent(app, world, admin_client):
    day = next_day()
    with app.app_context():
        other = make_client(first_name="Łucja", last_name="Kołodziej", email="lk@example.com")
        other_id = other.id

    def post(start: datetime, **extra: Any) -> Any:
        return admin_client.post(
            "/appointments/new",
            data={
                "staff": world["staff"],
                "start": start.astimezone(UTC).isoformat(),
                "service_id": world["service"],
                "client_id": other_id,
                **extra,
            },
        )

    def form(start: datetime) -> str:
        query = {"staff": world["staff"], "start": start.astimezone(UTC).isoformat()}
        return admin_client.get("/appointments/new", query_string=query).get_data(as_text=True)

    page = form(local(day, 9))
    assert "Client agreed to reminders" not in page
    assert post(local(day, 9)).status_code == 302
    with app.app_context():
        kinds = db.session.scalars(
            select(ConsentEvent.kind).where(ConsentEvent.client_id == other_id)
        ).all()
        assert kinds == ["given"]
        reminders.set_reminders_basis(LegalBasis.CONSENT, actor=None)
        db.session.commit()
    page = form(local(day, 11))
    assert "Client agreed to reminders" in page
    assert post(local(day, 11)).status_code == 302  # unticked: nothing recorded
    with app.app_context():
        assert db.session.scalars(
            select(ConsentEvent.kind).where(ConsentEvent.client_id == other_id)
        ).all() == ["given", "invalidated"]
    assert post(local(day, 13), reminders_agreed="y").status_code == 302
    with app.app_context():
        event = db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.client_id == other_id)
            .order_by(ConsentEvent.id.desc())
        ).first()
        assert event.kind == "given" and event.method == "staff" and event.actor_id


def test_service_form_reminder_fields(app, admin_client):
    with app.app_context():
        staff = admin_id()
    base = {
        "name": "Konsultacja dietetyczna",
        "duration_minutes": "45",
        "capacity": "1",
        "max_days_ahead": "60",
        "required_data": ["name", "email"],
        "staff_ids": [str(staff)],
    }
    page = admin_client.get("/appointments/services/new").get_data(as_text=True)
    assert "Reminder hour" in page and "Reminders by" in page
    bad = admin_client.post(
        "/appointments/services/new",
        data={
            **base,
            "reminder_days_before": "15",
            "reminder_hour": "24",
            "cancel_cutoff_hours": "200",
        },
    )
    html = bad.get_data(as_text=True)
    assert bad.status_code == 200
    assert "Between 0 and 14 days" in html and "An hour from 0 to 23" in html
    assert "Between 0 and 168 hours" in html
    good = admin_client.post(
        "/appointments/services/new",
        data={
            **base,
            "reminder_channels": ["sms"],
            "reminder_days_before": "2",
            "reminder_hour": "9",
            "cancel_cutoff_hours": "48",
            "online_booking": "y",
        },
    )
    assert good.status_code == 302
    with app.app_context():
        service = db.session.scalar(select(Service))
        assert service.reminder_channels == ["sms"]
        assert service.send_confirmation is False
        assert (service.reminder_days_before, service.reminder_hour) == (2, 9)
        assert service.online_booking is True and service.cancel_cutoff_hours == 48
        service_id = service.id
    edit = admin_client.get(f"/appointments/services/{service_id}/edit").get_data(as_text=True)
    assert re.search(r'<input checked [^>]*name="reminder_channels"[^>]*value="sms"', edit)
    assert not re.search(r'<input checked [^>]*name="reminder_channels"[^>]*value="email"', edit)


def test_changed_hour_moves_planned_reminders(app, world, outbox):
    day = next_day()
    now = datetime.now(UTC)
    with app.app_context():
        aid = book(world, local(day, 10), now)
        service = db.session.get(Service, world["service"])
        spec = services.ServiceSpec(
            name=service.name,
            description="",
            duration_minutes=service.duration_minutes,
            buffer_before_minutes=0,
            buffer_after_minutes=0,
            price=None,
            capacity=1,
            location=service.location,
            online_url="",
            min_notice_hours=0,
            max_days_ahead=365,
            required_data=["name", "email"],
            staff_ids=[world["staff"]],
            reminder_hour=8,
        )
        services.save_service(spec, service)
        db.session.commit()
        planned = rows(aid)
        expected = local(day - timedelta(days=1), 8).astimezone(UTC)
        assert aware(planned["before", "sms"].due_at) == expected
        assert planned["confirmation", "sms"].status == "scheduled"  # not planned twice
        assert len(planned) == 4
        assert time(8) == expected.astimezone(WARSAW).time()
        assert ReminderStatus.SCHEDULED.value == planned["before", "email"].status


def test_restricted_client_can_stop_sms_but_not_allow_them_again(app, world, admin_client):
    cid = world["client"]
    with app.app_context():
        db.session.get(Client, cid).restricted_at = datetime.now(UTC)
        db.session.commit()
    url = f"/appointments/client/{cid}/sms-opt-out"
    assert admin_client.post(url, data={"opt_out": "1"}).status_code == 302
    assert admin_client.post(url, data={"opt_out": "0"}).status_code == 409
    with app.app_context():
        assert db.session.get(Client, cid).sms_opt_out_at is not None


def test_a_long_sms_drops_the_place_to_fit(app, world, outbox, monkeypatch):
    monkeypatch.setitem(app.config, "CRM_SMS_MAX_SEGMENTS", 2)
    now = datetime.now(UTC)
    with app.app_context():
        service = db.session.get(Service, world["service"])
        service.location = "Łódź, ul. Żeromskiego 115, budynek B, piętro 3, gabinet 312 " * 2
        db.session.commit()
        book(world, local(next_day(), 10), now)
        run(now)
        (sms,) = sms_files(outbox)
    assert sms["segments"] <= 2
    assert "Żeromskiego" not in sms["body"] and "Stop SMS:" in sms["body"]
    assert "Masaż leczniczy" in sms["body"]
