"""Done when 1: walk an injectable clock through a consent's life. It warns at expiry
minus N days with exactly one task however often the job runs, expires on the day,
may_contact changes at exactly those instants, and a withdrawal counts at once."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.clients.models import Client
from crm.consents import services
from crm.consents.models import ConsentEvent, ConsentState, EventKind, Method
from crm.consents.policy import contactable, may_contact
from crm.consents.services import add_months
from crm.extensions import db
from crm.scheduler import get_job
from crm.scheduler.runner import run_job
from crm.tasks.models import Task, TaskOrigin
from tests.conftest import make_client, make_user
from tests.consents.factories import T0, days, give, make_purpose


def _tasks(client_id: int) -> list[Task]:
    stmt = select(Task).where(
        Task.client_id == client_id, Task.origin == TaskOrigin.CONSENT_EXPIRY.value
    )
    return list(db.session.scalars(stmt))


def _kinds(client_id: int) -> list[str]:
    stmt = select(ConsentEvent.kind).where(ConsentEvent.client_id == client_id)
    return list(db.session.scalars(stmt.order_by(ConsentEvent.id)))


def _sweep_ten_times(now):  # type: ignore[no-untyped-def]
    job = get_job("consents.expiry")
    assert job is not None
    for _ in range(10):
        assert run_job(job, now).ok


def test_a_consent_given_today_warns_once_then_expires_on_the_day(app):
    with app.app_context():
        owner = make_user("owner@example.com", role="sales", name="Olga Owner")
        client = make_client(first_name="Łucja", owner_id=owner.id)
        purpose = make_purpose(validity_months=24, warning_days=30)
        give(client.id, purpose, now=T0)
        expiry = add_months(T0, 24)
        warning = expiry - days(30)
        assert expiry == T0.replace(year=2032)

        # The day before the warning window: nothing, however often the job runs.
        _sweep_ten_times(warning - days(1))
        assert _tasks(client.id) == []
        assert may_contact(client, "newsletter", "email", now=warning - days(1))

        # The first instant of the window: one task for the owner, due on the expiry day.
        _sweep_ten_times(warning)
        tasks = _tasks(client.id)
        assert len(tasks) == 1
        assert tasks[0].assignee_id == owner.id and tasks[0].due_date == expiry.date()
        assert tasks[0].is_open and "Newsletter" in tasks[0].title
        # Warning changes nothing for the gate: the consent still counts.
        assert may_contact(client, "newsletter", "email", now=warning)

        # Later runs inside the window still make no second task.
        _sweep_ten_times(expiry - days(1))
        assert len(_tasks(client.id)) == 1

        # A microsecond before expiry the consent counts; at the expiry instant it does not,
        # before and after the sweep has recorded it.
        before = expiry - days(0.00000001)
        assert may_contact(client, "newsletter", "email", now=before)
        assert not may_contact(client, "newsletter", "email", now=expiry)
        assert _kinds(client.id) == ["given"]
        _sweep_ten_times(expiry)
        assert _kinds(client.id) == ["given", "expired"]
        state = db.session.scalar(select(ConsentState).where(ConsentState.client_id == client.id))
        assert state.status == "expired" and state.ended_at == expiry
        expired = db.session.scalar(
            select(ConsentEvent).where(ConsentEvent.kind == EventKind.EXPIRED.value)
        )
        assert expired.occurred_at == expiry and expired.method == Method.SYSTEM.value
        assert not may_contact(client, "newsletter", "email", now=expiry + days(1))
        assert len(_tasks(client.id)) == 1


def test_the_sweep_is_set_based_sql(app):
    """Two statements to expire and two per purpose to warn, whatever the row count."""
    with app.app_context():
        purpose = make_purpose(validity_months=1, warning_days=10)
        ids = [make_client(last_name=f"Nowak {n}").id for n in range(12)]
        for client_id in ids:
            give(client_id, purpose, now=T0)
        statements: list[str] = []
        from sqlalchemy import event

        def seen(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
            statements.append(statement)

        engine = db.session.get_bind()
        event.listen(engine, "before_cursor_execute", seen)
        try:
            result = services.sweep_expiry(add_months(T0, 1) - days(5))
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert result.warned == 12
        writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]
        # expire: INSERT + UPDATE; warn: INSERT + UPDATE; the audit entry: one INSERT.
        assert len([s for s in writes if "consent_events" in s or "tasks" in s]) <= 3


def test_a_withdrawal_takes_effect_immediately(app):
    with app.app_context():
        client = make_client()
        purpose = make_purpose()
        give(client.id, purpose, now=T0)
        moment = T0 + days(3)
        assert may_contact(client.id, purpose, "email", now=moment)
        give(client.id, purpose, now=moment, kind=EventKind.WITHDRAWN, method=Method.STAFF)
        assert not may_contact(client.id, purpose, "email", now=moment)
        # The bulk form of the gate agrees.
        visible = db.session.scalars(
            select(Client.id).where(contactable(purpose, "email", now=moment))
        ).all()
        assert client.id not in visible


def test_a_renewal_moves_the_expiry_and_settles_the_warning(app):
    with app.app_context():
        client = make_client()
        purpose = make_purpose(validity_months=12, warning_days=30)
        give(client.id, purpose, now=T0)
        warned_at = add_months(T0, 12) - days(10)
        services.sweep_expiry(warned_at)
        db.session.commit()
        assert [t.is_open for t in _tasks(client.id)] == [True]
        give(client.id, purpose, now=warned_at + days(1), kind=EventKind.RENEWED)
        assert [t.is_open for t in _tasks(client.id)] == [False]
        new_expiry = add_months(warned_at + days(1), 12)
        assert may_contact(client, purpose, "email", now=new_expiry - days(1))
        # The renewed consent gets its own warning in its own window, once.
        services.sweep_expiry(new_expiry - days(29))
        services.sweep_expiry(new_expiry - days(28))
        db.session.commit()
        assert sorted(t.is_open for t in _tasks(client.id)) == [False, True]
        count = db.session.scalar(select(func.count()).select_from(ConsentEvent))
        assert count == 2  # given, renewed: warnings are not events


def test_each_purpose_warns_at_its_own_distance(app):
    with app.app_context():
        client_id = make_client().id
        early = make_purpose("Newsletter", validity_months=12, warning_days=30)
        late = make_purpose("SMS reminders", validity_months=12, warning_days=10)
        give(client_id, early, now=T0)
        give(client_id, late, now=T0)
        expiry = add_months(T0, 12)
        assert services.sweep_expiry(expiry - days(20)).warned == 1
        [task] = _tasks(client_id)
        assert "Newsletter" in task.title
        assert services.sweep_expiry(expiry - days(10)).warned == 1
        titles = sorted(t.title for t in _tasks(client_id))
        assert ["Newsletter" in titles[0], "SMS reminders" in titles[1]] == [True, True]
