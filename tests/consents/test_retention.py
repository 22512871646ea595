"""Retention: clients whose every purpose ended longer ago than its retention period
become a review task, or are anonymised (audited), as each purpose says."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select

from crm.attachments.models import Attachment
from crm.attachments.services import storage_path
from crm.audit.models import AuditEntry
from crm.clients.models import Client
from crm.consents import services
from crm.consents.models import AnonymisedClient, EventKind, Method, RetentionAction
from crm.consents.services import add_months
from crm.extensions import db
from crm.notes.models import Note
from crm.scheduler import get_job
from crm.scheduler.runner import run_job
from crm.tasks.models import Task, TaskOrigin
from crm.tasks.services import complete_task
from tests.conftest import make_client, make_field, make_user
from tests.consents.factories import T0, days, give, make_purpose


def _withdraw(client_id, purpose, now):  # type: ignore[no-untyped-def]
    give(client_id, purpose, now=now, kind=EventKind.WITHDRAWN, method=Method.STAFF)


def _review_tasks(client_id: int) -> list[Task]:
    stmt = select(Task).where(Task.client_id == client_id, Task.origin == TaskOrigin.RETENTION)
    return list(db.session.scalars(stmt.order_by(Task.id)))


def _retention(now):  # type: ignore[no-untyped-def]
    job = get_job("consents.retention")
    assert job is not None
    outcome = run_job(job, now)
    assert outcome.ok, outcome.error
    return outcome.stats


def test_a_review_task_once_the_retention_period_is_over(app):
    with app.app_context():
        owner = make_user("owner@example.com", role="sales")
        client = make_client(owner_id=owner.id)
        purpose = make_purpose(retention_months=6, retention_action=RetentionAction.REVIEW)
        give(client.id, purpose, now=T0)
        ended = T0 + days(10)
        _withdraw(client.id, purpose, ended)

        assert _retention(add_months(ended, 6) - days(1)) == {"review_tasks": 0, "anonymised": 0}
        for _ in range(3):
            _retention(add_months(ended, 6) + days(1))
        [task] = _review_tasks(client.id)
        assert task.assignee_id == owner.id and task.origin_ref == f"retention:{client.id}"

        # Reviewed (kept for a reason): no new task until the purposes end again.
        complete_task(task)
        db.session.commit()
        _retention(add_months(ended, 8))
        assert len(_review_tasks(client.id)) == 1
        give(client.id, purpose, now=add_months(ended, 9))
        _withdraw(client.id, purpose, add_months(ended, 10))
        _retention(add_months(ended, 15))  # ended again at +10 months: 6 more to go
        assert len(_review_tasks(client.id)) == 1
        _retention(add_months(ended, 16) + days(1))
        assert len(_review_tasks(client.id)) == 2


def test_anonymisation_strips_the_person_and_is_audited(app):
    with app.app_context():
        personal = make_field("Birthday", "date")
        plain = make_field("Lifetime value", "number", personal_data=False)
        client = make_client(
            first_name="Łucja",
            last_name="Dvořák",
            email="lucja@example.com",
            phone="+48601234567",
            city="Łódź",
            custom={personal.key: "1984-07-21", plain.key: 420},
        )
        client_id = client.id
        db.session.add(Note(client_id=client_id, kind="note", body="Lubi kawę."))
        key = secrets.token_hex(16)
        path = storage_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"scan")
        db.session.add(
            Attachment(
                client_id=client_id,
                filename="dowod.pdf",
                content_type="application/pdf",
                size_bytes=4,
                sha256="0" * 64,
                storage_key=key,
            )
        )
        db.session.commit()
        purpose = make_purpose(retention_months=3, retention_action=RetentionAction.ANONYMISE)
        give(client_id, purpose, now=T0)
        _withdraw(client_id, purpose, T0 + days(1))

        assert _retention(add_months(T0, 3)) == {"review_tasks": 0, "anonymised": 0}
        assert _retention(add_months(T0 + days(1), 3) + days(1))["anonymised"] == 1
        db.session.expire_all()
        client = db.session.get(Client, client_id)
        assert (client.first_name, client.last_name, client.email, client.phone) == ("",) * 4
        assert client.city == "" and client.custom == {plain.key: 420}
        assert "lucja" not in client.search_text
        assert db.session.scalar(select(func.count()).select_from(Note)) == 0
        assert db.session.scalar(select(func.count()).select_from(Attachment)) == 0
        assert not path.exists()
        assert db.session.get(AnonymisedClient, client_id) is not None
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "client.anonymise"))
        assert entry.client_id == client_id and entry.details["reason"] == "retention"
        assert "Łucja" not in str(entry.details)  # which fields, never their values
        # Once is enough.
        assert _retention(add_months(T0, 9))["anonymised"] == 0


def test_nothing_happens_while_any_purpose_still_holds(app):
    with app.app_context():
        client_id = make_client().id
        short = make_purpose("Newsletter", retention_months=1, retention_action="anonymise")
        contract = make_purpose(
            "Contract",
            basis=services.LegalBasis.CONTRACT,
            retention_months=1,
            retention_action="anonymise",
        )
        give(client_id, short, now=T0)
        give(client_id, contract, now=T0)
        _withdraw(client_id, short, T0 + days(1))
        assert _retention(add_months(T0, 30)) == {"review_tasks": 0, "anonymised": 0}
        # A client with no record at all is left alone too.
        make_client(last_name="Bez zgody")
        assert _retention(add_months(T0, 30)) == {"review_tasks": 0, "anonymised": 0}


def test_review_wins_over_anonymisation(app):
    with app.app_context():
        client_id = make_client().id
        review = make_purpose("Invoices", retention_months=2, retention_action="review")
        anonymise = make_purpose("Newsletter", retention_months=2, retention_action="anonymise")
        for purpose in (review, anonymise):
            give(client_id, purpose, now=T0)
            _withdraw(client_id, purpose, T0 + days(1))
        assert _retention(add_months(T0, 4)) == {"review_tasks": 1, "anonymised": 0}
