"""Deadlines of the request register (Art. 12(3)): the due date, extensions, and the
periodic job that gives staff a task before a deadline and again once it passed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.extensions import db
from crm.privacy import services
from crm.privacy.models import DataRequest, RequestKind
from crm.privacy.services import (
    RequestError,
    add_months,
    due_date,
    latest_extension,
    sync_deadline_tasks,
)
from crm.privacy.tasks import request_deadlines
from crm.scheduler import get_job
from crm.tasks.models import Task, TaskOrigin, TaskStatus
from crm.tasks.services import complete_task
from tests.conftest import make_client, make_user
from tests.privacy.conftest import make_request

# --- the due date -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2026, 1, 31), date(2026, 2, 28)),
        (date(2026, 1, 30), date(2026, 2, 28)),
        (date(2026, 1, 29), date(2026, 2, 28)),
        (date(2026, 1, 28), date(2026, 2, 28)),
        (date(2024, 1, 31), date(2024, 2, 29)),  # leap year
        (date(2024, 1, 29), date(2024, 2, 29)),
        (date(2000, 1, 31), date(2000, 2, 29)),  # divisible by 400: leap
        (date(2100, 1, 31), date(2100, 2, 28)),  # divisible by 100 only: not leap
        (date(2026, 3, 31), date(2026, 4, 30)),
        (date(2026, 2, 15), date(2026, 3, 15)),
        (date(2026, 2, 28), date(2026, 3, 28)),
        (date(2024, 2, 29), date(2024, 3, 29)),
        (date(2026, 12, 31), date(2027, 1, 31)),  # over the year end
        (date(2026, 12, 1), date(2027, 1, 1)),
        (date(2026, 8, 31), date(2026, 9, 30)),
    ],
)
def test_due_date_is_one_calendar_month_later_clamped_to_the_month_end(received, due):
    assert due_date(received) == due


@pytest.mark.parametrize(
    ("original_due", "latest"),
    [
        (date(2026, 2, 28), date(2026, 4, 28)),
        (date(2025, 12, 31), date(2026, 2, 28)),
        (date(2023, 12, 31), date(2024, 2, 29)),
        (date(2099, 12, 31), date(2100, 2, 28)),
        (date(2026, 11, 30), date(2027, 1, 30)),
    ],
)
def test_an_extension_reaches_at_most_two_months_after_the_original_due_date(original_due, latest):
    assert latest_extension(original_due) == latest


def test_add_months_goes_backwards_too():
    assert add_months(date(2026, 3, 31), -1) == date(2026, 2, 28)
    assert add_months(date(2026, 1, 15), -13) == date(2024, 12, 15)


# --- extensions ---------------------------------------------------------------------------


@pytest.fixture
def staff(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return make_user("rodo@example.com", role="manager", name="Łucja Dvořák").id


def _extend(request_id: int, staff_id: int, **kw):  # type: ignore[no-untyped-def]
    from crm.auth.models import User

    data_request = db.session.get(DataRequest, request_id)
    services.extend_request(data_request, by=db.session.get(User, staff_id), **kw)
    db.session.commit()
    return data_request


def test_an_extension_needs_a_reason_and_is_audited(app, ctx, staff):
    request_id = make_request(received_on=date(2030, 1, 31)).id  # due 28 Feb 2030
    with pytest.raises(RequestError) as refused:
        _extend(request_id, staff, until=date(2030, 3, 31), reason="  ", today=date(2030, 2, 1))
    assert refused.value.field == "reason"
    db.session.rollback()
    extended = _extend(
        request_id,
        staff,
        until=date(2030, 4, 28),
        reason="Many requests this month",
        today=date(2030, 2, 10),
    )
    assert extended.deadline == date(2030, 4, 28)
    assert extended.due_on == date(2030, 2, 28)  # the original stays on record
    assert extended.extension_reason == "Many requests this month"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "request.extend"))
    assert entry.target_id == request_id
    assert entry.details["deadline"] == ["2030-02-28", "2030-04-28"]
    assert entry.details["reason"] == "Many requests this month"


def test_an_extension_is_capped_at_two_more_months(app, ctx, staff):
    request_id = make_request(received_on=date(2030, 1, 31)).id  # due 28 Feb 2030
    with pytest.raises(RequestError) as refused:
        _extend(request_id, staff, until=date(2030, 4, 29), reason="x", today=date(2030, 2, 1))
    assert refused.value.field == "until"
    assert "two months" in refused.value.message
    db.session.rollback()
    with pytest.raises(RequestError):
        _extend(request_id, staff, until=date(2030, 2, 28), reason="x", today=date(2030, 2, 1))
    db.session.rollback()
    assert db.session.get(DataRequest, request_id).extended_until is None


def test_extending_on_the_due_date_itself_is_allowed_after_it_is_refused(app, ctx, staff):
    on_time = make_request(received_on=date(2030, 3, 15)).id  # due 15 Apr 2030
    late = make_request(received_on=date(2030, 3, 15)).id
    assert _extend(
        on_time, staff, until=date(2030, 5, 15), reason="Complex", today=date(2030, 4, 15)
    ).deadline == date(2030, 5, 15)
    with pytest.raises(RequestError) as refused:
        _extend(late, staff, until=date(2030, 5, 15), reason="Complex", today=date(2030, 4, 16))
    assert "passed" in refused.value.message
    db.session.rollback()
    assert db.session.get(DataRequest, late).extended_until is None


def test_a_second_extension_counts_from_the_original_due_date(app, ctx, staff):
    request_id = make_request(received_on=date(2030, 3, 15)).id  # due 15 Apr, at most 15 Jun
    _extend(request_id, staff, until=date(2030, 5, 15), reason="First", today=date(2030, 4, 1))
    with pytest.raises(RequestError):
        _extend(request_id, staff, until=date(2030, 7, 15), reason="Second", today=date(2030, 5, 1))
    db.session.rollback()
    again = _extend(
        request_id, staff, until=date(2030, 6, 15), reason="Second", today=date(2030, 5, 15)
    )
    assert again.deadline == date(2030, 6, 15)


def test_a_closed_request_cannot_be_extended(app, ctx, staff):
    request_id = make_request(status="done", outcome="Sent").id
    with pytest.raises(RequestError):
        _extend(request_id, staff, until=date(2030, 4, 30), reason="x", today=date(2030, 3, 2))


# --- deadline tasks -----------------------------------------------------------------------


def _at(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _tasks(request_id: int | None = None) -> list[Task]:
    stmt = select(Task).where(Task.origin == TaskOrigin.DATA_REQUEST.value).order_by(Task.id)
    tasks = list(db.session.scalars(stmt))
    if request_id is not None:
        tasks = [t for t in tasks if (t.origin_ref or "").startswith(f"request:{request_id}:")]
    return tasks


def test_the_job_is_registered_hourly():
    job = get_job("privacy.deadlines")
    assert job is not None and job.every == timedelta(hours=1)


def test_walking_the_clock_gives_one_task_then_an_overdue_one(app, ctx, staff):
    owner = make_user("wlasciciel@example.com", role="sales", name="Jürgen Müller")
    client = make_client(first_name="Dvořák", owner_id=owner.id)
    request_id = make_request(
        RequestKind.ERASURE, client=client, received_on=date(2030, 1, 31), assignee_id=staff
    ).id  # due 28 Feb 2030

    assert sync_deadline_tasks(_at(date(2030, 2, 20))).as_dict() == {
        "warned": 0,
        "overdue": 0,
        "completed": 0,
    }
    assert _tasks() == []

    result = sync_deadline_tasks(_at(date(2030, 2, 21)))  # 7 days before
    db.session.commit()
    assert result.warned == 1
    [task] = _tasks()
    assert task.origin_ref == f"request:{request_id}:2030-02-28"
    assert task.assignee_id == staff
    assert task.client_id == client.id
    assert task.due_date == date(2030, 2, 28)
    assert f"#{request_id}" in task.title
    assert f"/privacy/requests/{request_id}" in (task.details or "")

    # Idempotent, hour after hour, up to and including the due date.
    for day in (date(2030, 2, 21), date(2030, 2, 25), date(2030, 2, 28)):
        assert sync_deadline_tasks(_at(day, 15)).warned == 0
    db.session.commit()
    assert len(_tasks()) == 1

    # Overdue: the open warning task becomes the overdue task (still one open task).
    result = sync_deadline_tasks(_at(date(2030, 3, 1)))
    db.session.commit()
    assert result.overdue == 1
    [task] = _tasks()
    assert task.is_open and task.origin_ref.endswith(":overdue")
    assert task.title.startswith("Overdue")
    assert sync_deadline_tasks(_at(date(2030, 3, 2))).overdue == 0
    assert len(_tasks()) == 1


def test_an_overdue_task_follows_a_warning_task_that_was_completed(app, ctx, staff):
    request_id = make_request(received_on=date(2030, 1, 31), created_by_id=staff).id
    sync_deadline_tasks(_at(date(2030, 2, 22)))
    [warning] = _tasks()
    complete_task(warning)
    db.session.commit()
    # Done by staff: not opened again before the deadline.
    assert sync_deadline_tasks(_at(date(2030, 2, 25))).warned == 0
    sync_deadline_tasks(_at(date(2030, 3, 1)))
    db.session.commit()
    tasks = _tasks(request_id)
    assert [t.status for t in tasks] == [TaskStatus.DONE.value, TaskStatus.OPEN.value]
    assert tasks[1].origin_ref == f"request:{request_id}:2030-02-28:overdue"
    assert tasks[1].assignee_id == staff  # nobody assigned: whoever registered it


def test_an_extended_deadline_gives_a_new_task_and_completes_the_old_one(app, ctx, staff):
    request_id = make_request(received_on=date(2030, 1, 31), assignee_id=staff).id
    sync_deadline_tasks(_at(date(2030, 2, 22)))
    db.session.commit()
    [old] = _tasks()
    _extend(request_id, staff, until=date(2030, 4, 28), reason="Complex", today=date(2030, 2, 25))
    db.session.refresh(old)
    assert not old.is_open  # the deadline it named is gone
    assert sync_deadline_tasks(_at(date(2030, 3, 1))).as_dict()["overdue"] == 0
    sync_deadline_tasks(_at(date(2030, 4, 21)))
    db.session.commit()
    new = [t for t in _tasks() if t.is_open]
    assert [t.origin_ref for t in new] == [f"request:{request_id}:2030-04-28"]
    assert new[0].due_date == date(2030, 4, 28)


def test_closing_a_request_completes_its_deadline_tasks(app, ctx, staff):
    from crm.auth.models import User

    request_id = make_request(
        received_on=date(2030, 1, 31), assignee_id=staff, identity_check="ID card seen"
    ).id
    other_id = make_request(received_on=date(2030, 1, 31), assignee_id=staff).id
    sync_deadline_tasks(_at(date(2030, 2, 22)))
    db.session.commit()
    data_request = db.session.get(DataRequest, request_id)
    finished = services.close_request(
        data_request,
        status="done",
        outcome="Export sent by email",
        by=db.session.get(User, staff),
        now=_at(date(2030, 2, 26)),
    )
    db.session.commit()
    assert finished == 1
    assert not any(t.is_open for t in _tasks(request_id))
    assert all(t.is_open for t in _tasks(other_id))
    # A closed request gets no more tasks.
    sync_deadline_tasks(_at(date(2030, 3, 5)))
    assert not any(t.is_open for t in _tasks(request_id))


def test_the_assignee_falls_back_to_the_creator_then_the_client_owner(app, ctx, staff):
    owner = make_user("opiekun@example.com", role="sales", name="Zdeněk Novák")
    gone = make_user("odszedl@example.com", role="sales", name="Gone")
    gone.active = False
    db.session.commit()
    client = make_client(owner_id=owner.id)
    by_owner = make_request(client=client, received_on=date(2030, 1, 31)).id
    by_creator = make_request(
        client=client, received_on=date(2030, 1, 31), created_by_id=staff, assignee_id=gone.id
    ).id
    sync_deadline_tasks(_at(date(2030, 2, 25)))
    assert [t.assignee_id for t in _tasks(by_owner)] == [owner.id]
    assert [t.assignee_id for t in _tasks(by_creator)] == [staff]


def test_the_periodic_job_runs_through_the_runner(app, ctx, staff):
    from crm.scheduler.runner import run_job

    make_request(received_on=date(2030, 1, 31), assignee_id=staff)
    outcome = run_job(get_job("privacy.deadlines"), _at(date(2030, 2, 24)))
    assert outcome.ok and outcome.stats == {"warned": 1, "overdue": 0, "completed": 0}
    assert request_deadlines(_at(date(2030, 2, 24))) == {"warned": 0, "overdue": 0, "completed": 0}


def test_today_is_the_organisations_day(app, ctx, staff):
    """23:30 UTC on 20 February is already the 21st in Warsaw: the warning window opens."""
    make_request(received_on=date(2030, 1, 31), assignee_id=staff)
    late_evening = datetime(2030, 2, 20, 23, 30, tzinfo=UTC)
    assert services.org_date(late_evening) == date(2030, 2, 21)
    assert sync_deadline_tasks(late_evening).warned == 1


def test_the_job_completes_an_open_task_about_a_deadline_the_request_no_longer_has(app, ctx, staff):
    from tests.tasks.factories import make_task

    request_id = make_request(
        received_on=date(2030, 1, 31), assignee_id=staff, extended_until=date(2030, 3, 31)
    ).id
    stale = make_task(
        "Answer by 28 Feb",
        origin=TaskOrigin.DATA_REQUEST,
        origin_ref=f"request:{request_id}:2030-02-28",
        assignee_id=staff,
    ).id
    unrelated = make_task("Call back", assignee_id=staff).id
    result = sync_deadline_tasks(_at(date(2030, 3, 25)))
    db.session.commit()
    assert result.completed == 1 and result.warned == 1
    assert not db.session.get(Task, stale).is_open
    assert db.session.get(Task, unrelated).is_open
    assert [t.origin_ref for t in _tasks(request_id) if t.is_open] == [
        f"request:{request_id}:2030-03-31"
    ]


def test_editing_the_received_date_moves_the_due_date_unless_extended(app, ctx, staff):
    from crm.auth.models import User
    from crm.privacy.services import RequestSpec, update_request

    user = db.session.get(User, staff)

    def spec(received: date) -> RequestSpec:
        return RequestSpec(
            kind="access",
            channel="email",
            received_on=received,
            requester="Jan Nowak",
            client=None,
            details="Kopia danych, proszę",
            identity_check="",
            assignee_id=None,
        )

    request_id = make_request(received_on=date(2030, 1, 15), requester="Jan Kowalski").id
    data_request = db.session.get(DataRequest, request_id)
    assert update_request(data_request, spec(date(2030, 1, 31)), by=user, today=date(2030, 2, 1))
    db.session.commit()
    assert data_request.due_on == date(2030, 2, 28)
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "request.update"))
    assert entry.details["changes"]["due_on"] == ["2030-02-15", "2030-02-28"]
    # Free text is named, not copied: the audit log may outlive the person's erasure.
    assert sorted(entry.details["edited"]) == ["details", "requester"]
    assert "Jan Nowak" not in str(entry.details)
    assert not update_request(
        data_request, spec(date(2030, 1, 31)), by=user, today=date(2030, 2, 1)
    )

    data_request.extended_until = date(2030, 3, 31)
    db.session.commit()
    with pytest.raises(RequestError) as refused:
        update_request(data_request, spec(date(2030, 1, 20)), by=user, today=date(2030, 2, 1))
    assert refused.value.field == "received_on"
