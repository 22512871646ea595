"""Subscribing and unsubscribing go through the consent ledger, with history and audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from crm.audit.models import AuditEntry
from crm.consents.models import ConsentEvent, ConsentState
from crm.consents.policy import may_contact
from crm.consents.services import Evidence
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import EventSource, SubscriptionEvent, Suppression
from crm.mailing.services import MailingError
from tests.conftest import make_client, make_user
from tests.mailing.factories import make_group, make_list


def _kinds(client_id: int) -> list[tuple[str, str]]:
    return [
        (e.kind, e.method)
        for e in db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.client_id == client_id)
            .order_by(ConsentEvent.id)
        )
    ]


def test_single_opt_in_records_consent_history_and_audit(ctx):
    admin = make_user()
    client = make_client(first_name="Łucja", last_name="Wójcik", email="lucja@example.pl")
    mlist = make_list()
    evidence = Evidence(ip="198.51.100.0", user_agent="Firefox/140")
    sub = services.subscribe(client, mlist, actor=admin, evidence=evidence)
    db.session.commit()
    assert sub.status == "confirmed"
    assert _kinds(client.id) == [("given", "staff")]
    assert may_contact(client.id, "newsletter", "email")
    [event] = db.session.scalars(select(SubscriptionEvent)).all()
    assert (event.old_status, event.status, event.source) == ("", "confirmed", "staff")
    assert event.actor_id == admin.id and event.ip == "198.51.100.0"
    assert event.consent_event_id is not None
    actions = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert "consent.given" in actions and "mailing.confirmed" in actions
    # Subscribing again changes nothing.
    services.subscribe(client, mlist, actor=admin)
    db.session.commit()
    assert len(_kinds(client.id)) == 1


def test_unsubscribe_withdraws_unless_another_list_needs_the_purpose(ctx):
    client = make_client(email="jan@example.cz")
    weekly, monthly = make_list("Weekly"), make_list("Monthly")
    for mlist in (weekly, monthly):
        services.subscribe(client, mlist)
    db.session.commit()
    services.unsubscribe(services.get_subscription(client.id, weekly.id))
    db.session.commit()
    # Both lists rest on "newsletter": the monthly list still needs the consent.
    assert may_contact(client.id, "newsletter", "email")
    assert services.unsubscribe(services.get_subscription(client.id, monthly.id))
    db.session.commit()
    assert _kinds(client.id)[-1] == ("withdrawn", "staff")
    assert not may_contact(client.id, "newsletter", "email")
    state = db.session.scalar(select(ConsentState))
    assert state.status == "withdrawn"
    # A second unsubscribe is harmless.
    assert not services.unsubscribe(services.get_subscription(client.id, monthly.id))


def test_switch_within_the_group_only(ctx):
    group = make_group("Newsletter")
    pl, de = make_list("Newsletter PL", group=group), make_list("Newsletter DE", group=group)
    other = make_list("Offers")
    client = make_client(email="anna@example.de")
    sub = services.subscribe(client, pl)
    db.session.commit()
    new = services.switch(sub, de, source=EventSource.PAGE)
    db.session.commit()
    assert new.list_id == de.id and new.status == "confirmed"
    assert services.get_subscription(client.id, pl.id).status == "unsubscribed"
    # The shared purpose was never withdrawn in between.
    assert [k for k, _m in _kinds(client.id)] == ["given", "given"]
    with pytest.raises(MailingError):
        services.switch(new, other)
    db.session.rollback()
    assert [m.id for m in services.switch_targets(de)] == [pl.id]


def test_suppression_is_hashed_and_blocks_subscribing(ctx):
    client = make_client(email="Müller@Example.DE")
    mlist = make_list()
    services.suppress(" müller@example.de ", "hard_bounce")
    services.suppress("müller@example.de", "manual")  # idempotent, the first reason stays
    db.session.commit()
    [row] = db.session.scalars(select(Suppression)).all()
    assert row.reason == "hard_bounce" and "@" not in row.email_hash and len(row.email_hash) == 64
    assert services.is_suppressed("MÜLLER@example.de")
    assert not services.is_suppressed("other@example.de")
    with pytest.raises(MailingError, match="suppression list"):
        services.subscribe(client, mlist)


def test_unsubscribe_all_adds_a_suppression(ctx):
    client = make_client(email="eva@example.cz")
    services.subscribe(client, make_list())
    db.session.commit()
    assert services.unsubscribe_all(client, source=EventSource.STAFF) == 1
    db.session.commit()
    assert services.is_suppressed("eva@example.cz")
    assert db.session.scalar(select(Suppression.reason)) == "unsubscribed_all"


def test_subscription_events_are_insert_only(ctx):
    client = make_client(email="ola@example.pl")
    services.subscribe(client, make_list())
    db.session.commit()
    for statement in (
        "UPDATE mailing_subscription_events SET status = 'x'",
        "DELETE FROM mailing_subscription_events",
    ):
        with pytest.raises((DBAPIError, IntegrityError)), db.session.begin_nested():
            db.session.execute(text(statement))
    # Deleting the client takes its history with it.
    db.session.delete(db.session.get(type(client), client.id))
    db.session.commit()
    assert db.session.scalar(select(SubscriptionEvent)) is None


def test_no_email_or_archived_list_is_refused(ctx):
    mlist = make_list()
    with pytest.raises(MailingError, match="no email"):
        services.subscribe(make_client(email=""), mlist)
    services.set_list_archived(mlist, True, None)
    db.session.commit()
    with pytest.raises(MailingError, match="archived"):
        services.subscribe(make_client(email="x@example.com"), mlist)
