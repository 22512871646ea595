"""Done when 2: the database itself refuses to change or remove consent events (and
notice versions), on SQLite and PostgreSQL; the one way out is deleting the client."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from crm.consents.models import ConsentEvent, ConsentNotice, ConsentPurpose, ConsentState
from crm.extensions import db
from tests.conftest import make_client
from tests.consents.factories import give, make_purpose


def _refused(sql: str, **params: object) -> str:
    """Run raw SQL that the triggers must refuse; return the database's message."""
    with pytest.raises(DBAPIError) as caught:
        db.session.execute(text(sql), params)
        db.session.flush()
    db.session.rollback()
    return str(caught.value.orig)


@pytest.fixture
def recorded(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        client = make_client()
        purpose = make_purpose()
        event = give(client.id, purpose)
        return client.id, event.id, event.notice_id


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE consent_events SET kind = 'withdrawn' WHERE id = :id",
        "UPDATE consent_events SET occurred_at = occurred_at WHERE id = :id",
        "DELETE FROM consent_events WHERE id = :id",
        "DELETE FROM consent_events",
    ],
)
def test_raw_sql_cannot_change_or_remove_events(app, recorded, sql):
    _client_id, event_id, _notice_id = recorded
    with app.app_context():
        message = _refused(sql, id=event_id)
        assert "insert-only" in message
        event = db.session.get(ConsentEvent, event_id)
        assert event is not None and event.kind == "given"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE consent_notices SET text = 'We may sell your data.' WHERE id = :id",
        "DELETE FROM consent_notices WHERE id = :id",
    ],
)
def test_raw_sql_cannot_rewrite_a_notice_version(app, recorded, sql):
    _client_id, _event_id, notice_id = recorded
    with app.app_context():
        assert "insert-only" in _refused(sql, id=notice_id)
        assert db.session.get(ConsentNotice, notice_id).text.startswith("We send you")


def test_truncate_is_refused_on_postgresql(app, recorded):
    with app.app_context():
        if db.session.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite has no TRUNCATE")
        assert "insert-only" in _refused("TRUNCATE consent_events CASCADE")


def test_deleting_the_client_takes_its_events_along(app, admin_client, recorded):
    client_id, _event_id, _notice_id = recorded
    with app.app_context():
        other_id = make_client(last_name="Kowalczyk").id
        give(other_id, db.session.scalar(select(ConsentPurpose)))
    response = admin_client.post(f"/clients/{client_id}/delete")
    assert response.status_code in (204, 303)
    with app.app_context():
        left = db.session.scalars(select(ConsentEvent.client_id)).all()
        assert left == [other_id]
        states = db.session.scalar(select(func.count()).select_from(ConsentState))
        assert states == 1
