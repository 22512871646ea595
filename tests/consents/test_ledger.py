"""The state table and the events agree: `flask consents rebuild` derives the same
states; transitions that make no sense are refused; the gate's rules."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.clients.models import Client
from crm.consents import services
from crm.consents.models import ConsentEvent, ConsentState, EventKind, LegalBasis, Method
from crm.consents.policy import contactable, may_contact
from crm.consents.services import ConsentError, add_months, truncate_ip
from crm.extensions import db
from tests.conftest import make_client
from tests.consents.factories import T0, days, give, make_purpose

COMPARED = ("status", "since", "expires_at", "notice_id", "basis_event_id", "ended_at")


def _states() -> dict[tuple[int, int], tuple[object, ...]]:
    rows = db.session.scalars(select(ConsentState)).all()
    return {(s.client_id, s.purpose_id): tuple(getattr(s, n) for n in COMPARED) for s in rows}


def test_rebuild_derives_the_same_states_from_the_events(app):
    with app.app_context():
        a, b, c = (make_client(last_name=n).id for n in ("Nowak", "Müller", "Novák"))
        news = make_purpose("Newsletter", validity_months=6, warning_days=10)
        sms = make_purpose("SMS reminders", channels=["sms"])
        contract = make_purpose("Contract", basis=LegalBasis.CONTRACT)
        give(a, news, now=T0)
        give(a, sms, now=T0)
        give(a, sms, now=T0 + days(3), kind=EventKind.WITHDRAWN, method=Method.STAFF)
        give(b, news, now=T0, kind=EventKind.REFUSED)
        give(b, contract, now=T0)
        give(c, news, now=T0)
        give(c, news, now=T0 + days(100), kind=EventKind.RENEWED)
        services.sweep_expiry(add_months(T0, 6) - days(5))  # warns a
        services.sweep_expiry(add_months(T0, 6) + days(1))  # expires a's newsletter
        c_warning = add_months(T0 + days(100), 6) - days(5)
        assert services.sweep_expiry(c_warning).warned == 1  # warns c
        db.session.commit()
        before = _states()
        warned = {
            (s.client_id, s.purpose_id): s.warned_at is not None
            for s in db.session.scalars(select(ConsentState))
        }
        result = app.test_cli_runner().invoke(args=["consents", "rebuild"])
        assert result.exit_code == 0, result.output
        assert "Rebuilt 5 consent states" in result.output
        db.session.expire_all()
        assert _states() == before
        # A warning given before the rebuild is remembered, so it is not given twice.
        after = {
            (s.client_id, s.purpose_id): s.warned_at is not None
            for s in db.session.scalars(select(ConsentState))
        }
        assert after == warned and after[(c, news.id)] is True
        assert services.sweep_expiry(c_warning).warned == 0


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        (None, EventKind.WITHDRAWN, "There is no valid consent"),
        (None, EventKind.RENEWED, "There is no consent to renew"),
        (EventKind.GIVEN, EventKind.REFUSED, "withdraw it instead"),
        (EventKind.REFUSED, EventKind.INVALIDATED, "There is no valid consent"),
    ],
)
def test_senseless_transitions_are_refused(app, first, then, message):
    with app.app_context():
        client_id = make_client().id
        purpose = make_purpose()
        if first is not None:
            give(client_id, purpose, kind=first)
        with pytest.raises(ConsentError, match=message):
            give(client_id, purpose, now=T0 + days(1), kind=then)
        db.session.rollback()


def test_expiry_is_the_crm_s_own_and_archived_purposes_take_no_consent(app):
    with app.app_context():
        client_id = make_client().id
        purpose = make_purpose()
        with pytest.raises(ConsentError):
            give(client_id, purpose, kind=EventKind.EXPIRED)
        db.session.rollback()
        with pytest.raises(ConsentError):
            give(client_id, purpose, method=Method.SYSTEM)
        db.session.rollback()
        other = make_purpose("Other")
        with pytest.raises(ConsentError, match="notice"):
            services.record_event(
                client_id,
                purpose,
                EventKind.GIVEN,
                Method.PHONE,
                notice=services.latest_notices(other.id)["en"],
                now=T0,
            )
        db.session.rollback()
        services.archive_purpose(purpose, None)
        db.session.commit()
        with pytest.raises(ConsentError, match="archived"):
            give(client_id, purpose)
        db.session.rollback()


def test_may_contact_rules(app):
    with app.app_context():
        client = make_client()
        news = make_purpose("Newsletter", channels=["email"])
        contract = make_purpose(
            "Appointment reminders", basis=LegalBasis.CONTRACT, channels=["sms", "email"]
        )
        assert not may_contact(client, "newsletter", "email", now=T0)  # nothing recorded
        give(client.id, news, now=T0)
        give(client.id, contract, now=T0)
        assert may_contact(client, news, "email", now=T0)
        assert may_contact(client.id, news.id, "email", now=T0)
        assert not may_contact(client, news, "sms", now=T0)  # not a channel of the purpose
        assert not may_contact(client, news, "pigeon", now=T0)
        assert not may_contact(client, "no-such-purpose", "email", now=T0)
        # A contract does not lapse with time.
        assert may_contact(client, contract, "sms", now=T0 + days(3650))
        ids = set(db.session.scalars(select(Client.id).where(contactable(contract, "sms", now=T0))))
        assert ids == {client.id}
        assert db.session.scalars(select(Client.id).where(contactable(news, "sms"))).all() == []
        services.archive_purpose(news, None)
        db.session.commit()
        assert not may_contact(client, news, "email", now=T0)


def test_evidence_keeps_only_a_truncated_address():
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert truncate_ip("::ffff:198.51.100.9") == "198.51.100.0"
    assert truncate_ip("not an address") == ""


def test_months_are_calendar_months():
    assert services.add_months(T0.replace(month=1, day=31), 1).day == 28
    assert services.add_months(T0, 24) == T0.replace(year=T0.year + 2)
    assert services.add_months(T0, -13) == T0.replace(year=T0.year - 2, month=12)


def test_event_ids_follow_the_order_of_changes(app):
    with app.app_context():
        client_id = make_client().id
        purpose = make_purpose()
        for n in range(3):
            give(client_id, purpose, now=T0 + days(2 * n))
            give(
                client_id,
                purpose,
                now=T0 + days(2 * n + 1),
                kind=EventKind.WITHDRAWN,
                method=Method.STAFF,
            )
        kinds = db.session.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)).all()
        assert kinds == ["given", "withdrawn"] * 3
