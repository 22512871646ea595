"""Sending a campaign end to end into a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

import crm.queue
from crm.campaigns import services
from crm.campaigns.models import Campaign, Delivery, SentMessage
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import MailingList
from crm.sqltypes import utcnow
from tests.campaigns.conftest import make_campaign, make_list, subscribed_clients
from tests.conftest import make_client


def _deliveries(campaign_id: int) -> dict[str, Delivery]:
    rows = db.session.scalars(sa.select(Delivery).where(Delivery.campaign_id == campaign_id))
    return {d.email: d for d in rows}


def _start(campaign_id: int) -> int:
    campaign = db.session.get(Campaign, campaign_id)
    count = services.start_sending(campaign, campaign.created_by)
    db.session.commit()
    return count


def test_every_subscriber_gets_one_message_with_the_headers(app, smtp, queue):
    with app.app_context():
        mlist = make_list("Nowości")
        clients = subscribed_clients(mlist, 4)
        special = [
            make_client(first_name="Łukasz", last_name="Łódź", email="lukasz@example.pl"),
            make_client(first_name="Jürgen", last_name="Müller", email="juergen@example.de"),
            make_client(first_name="Jiří", last_name="Dvořák", email="jiri@example.cz"),
        ]
        for client in special:
            mailing.subscribe(client, db.session.get(MailingList, mlist.id))
        db.session.commit()
        outsider = make_client(email="not-on-the-list@example.pl")
        campaign = make_campaign([mlist.id])
        assert _start(campaign.id) == 7
        campaign_id, outsider_email = campaign.id, outsider.email
        emails = {c.email for c in clients + special}
    queue.join()

    received = smtp.messages
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(emails)
    assert outsider_email not in smtp.recipients()
    by_rcpt = {m.rcpt_tos[0]: m for m in received}
    message = by_rcpt["jiri@example.cz"].parsed()
    assert message["Subject"] == "Nowości z Łodzi dla Jiří"
    assert message["From"].addresses[0].display_name == "Salon Łódź"
    assert message["To"].addresses[0].display_name == "Jiří Dvořák"
    assert message.get_content_type() == "multipart/alternative"
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://crm.example.com/") and unsubscribe.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = unsubscribe[1:-1]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Dzień dobry Jiří Dvořák!" in text and link in text
    assert "<h1>Dzień dobry Jiří Dvořák!</h1>" in html
    assert f'href="{link.replace("&", "&amp;")}"' in html
    muller = by_rcpt["juergen@example.de"].parsed()
    assert "Jürgen Müller" in muller.get_body(("plain",)).get_content()

    with app.app_context():
        stats = services.campaign_stats(campaign_id)
        assert (stats.recipients, stats.sent, stats.failed, stats.skipped) == (7, 7, 0, 0)
        assert db.session.get(Campaign, campaign_id).status == "done"
        stored = db.session.scalars(
            sa.select(SentMessage).where(SentMessage.campaign_id == campaign_id)
        ).all()
        assert len(stored) == 7
        jiri = next(s for s in stored if s.email == "jiri@example.cz")
        # The stored bytes are exactly what the server received: the export's .eml.
        assert jiri.eml() == by_rcpt["jiri@example.cz"].data
        assert jiri.subject == "Nowości z Łodzi dla Jiří"


def test_unsubscribed_after_the_start_gets_nothing_and_counts_as_skipped(app, smtp):
    with app.app_context():
        mlist = make_list()
        clients = subscribed_clients(mlist, 6)
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        # Unsubscribes between the start and the batch that would have mailed them.
        leaver = clients[2]
        sub = mailing.get_subscription(leaver.id, mlist.id)
        mailing.unsubscribe(sub, campaign_id=campaign.id)
        db.session.commit()
        assert services.work_on_campaign(campaign.id) == "done"
        rows = _deliveries(campaign.id)
        assert rows[leaver.email].status == "skipped"
        assert rows[leaver.email].skip_reason == "unsubscribed"
        stats = services.campaign_stats(campaign.id)
        assert (stats.sent, stats.skipped, stats.unsubscribes) == (5, 1, 1)
        leaver_email = leaver.email
    assert leaver_email not in smtp.recipients()
    assert len(smtp.messages) == 5


def test_suppressed_addresses_are_never_mailed(app, smtp):
    with app.app_context():
        mlist = make_list()
        clients = subscribed_clients(mlist, 4)
        mailing.suppress(clients[0].email, "manual")  # before the start
        db.session.commit()
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        mailing.suppress(clients[1].email, "hard_bounce")  # after the start
        db.session.commit()
        services.work_on_campaign(campaign.id)
        rows = _deliveries(campaign.id)
        assert rows[clients[0].email].skip_reason == "suppressed"
        assert rows[clients[1].email].skip_reason == "suppressed"
        banned = {clients[0].email, clients[1].email}
    assert not banned & set(smtp.recipients())
    assert len(smtp.messages) == 2


def test_temporary_failures_are_retried_until_sent(app, smtp, queue):
    smtp.handler.fail_share = 0.5
    with app.app_context():
        app.config["CRM_CAMPAIGN_MAX_ATTEMPTS"] = 30
        mlist = make_list()
        emails = sorted(c.email for c in subscribed_clients(mlist, 8))
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        campaign_id = campaign.id
    queue.join()
    assert smtp.handler.temporary_failures > 0
    assert sorted(smtp.recipients()) == emails
    with app.app_context():
        rows = _deliveries(campaign_id)
        assert {d.status for d in rows.values()} == {"sent"}
        assert max(d.attempts for d in rows.values()) > 1
        assert db.session.get(Campaign, campaign_id).status == "done"


def test_temporary_failures_give_up_after_the_limit(app, smtp):
    smtp.handler.fail_share = 1.0
    with app.app_context():
        app.config["CRM_CAMPAIGN_MAX_ATTEMPTS"] = 3
        mlist = make_list()
        subscribed_clients(mlist, 2)
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        for _round in range(3):
            services.work_on_campaign(campaign.id)
        rows = _deliveries(campaign.id)
        assert {(d.status, d.attempts) for d in rows.values()} == {("failed", 3)}
        assert all(d.last_answer.startswith("451") for d in rows.values())
        assert db.session.get(Campaign, campaign.id).status == "done"


def test_a_permanent_refusal_fails_the_delivery_and_suppresses_the_address(app, smtp):
    with app.app_context():
        mlist = make_list()
        clients = subscribed_clients(mlist, 3)
        bounced = clients[1].email
        smtp.handler.reject = {bounced.lower()}
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        services.work_on_campaign(campaign.id)
        row = _deliveries(campaign.id)[bounced]
        assert (row.status, row.attempts) == ("failed", 1)
        assert row.last_answer.startswith("550")
        assert mailing.is_suppressed(bounced)
        # The next campaign does not try again.
        smtp.handler.reject = set()
        second = make_campaign([mlist.id])
        _start(second.id)
        services.work_on_campaign(second.id)
        assert _deliveries(second.id)[bounced].skip_reason == "suppressed"
    assert smtp.recipients().count(bounced) == 0


def _pause_after(count: int, campaign_id: int, status: str):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def hook(row) -> None:  # type: ignore[no-untyped-def]
        seen.append(row.id)
        if len(seen) == count + 1:  # the (count+1)th message is about to go: stop now
            db.session.execute(
                sa.update(Campaign).where(Campaign.id == campaign_id).values(status=status)
            )
            db.session.commit()

    return hook


@pytest.mark.parametrize("stop", ["paused", "cancelled"])
def test_pause_and_cancel_stop_a_batch_in_flight(app, smtp, stop):
    with app.app_context():
        app.config["CRM_CAMPAIGN_BATCH_SIZE"] = 10
        mlist = make_list()
        subscribed_clients(mlist, 6)
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        fresh = db.session.get(Campaign, campaign.id)
        content = services.prepare(fresh)
        transport = services.open_transport(app.config)
        outcomes = services.run_batch(
            fresh, content, transport, None, before_send=_pause_after(2, campaign.id, stop)
        )
        transport.close()
        # The message being sent when the stop came went out; nothing after it.
        assert (outcomes.sent, outcomes.released, outcomes.stopped) == (3, 3, stop)
        assert len(smtp.messages) == 3
        stats = services.campaign_stats(campaign.id)
        if stop == "paused":
            assert (stats.sent, stats.pending) == (3, 3)
            assert services.work_on_campaign(campaign.id) == "not sending"
            services.resume(db.session.get(Campaign, campaign.id), None)
            db.session.commit()
            assert services.work_on_campaign(campaign.id) == "done"
            assert len(smtp.messages) == 6
        else:
            assert (stats.sent, stats.pending, stats.skipped) == (3, 0, 3)
            assert services.work_on_campaign(campaign.id) == "not sending"
            assert len(smtp.messages) == 3


def test_pause_resume_and_cancel_through_the_services(app, smtp):
    with app.app_context():
        mlist = make_list()
        subscribed_clients(mlist, 3)
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        services.pause(campaign, None)
        db.session.commit()
        assert services.work_on_campaign(campaign.id) == "not sending"
        with pytest.raises(services.CampaignError):
            services.pause(campaign, None)
        services.resume(campaign, None)
        services.cancel(campaign, None)
        db.session.commit()
        assert services.work_on_campaign(campaign.id) == "not sending"
        stats = services.campaign_stats(campaign.id)
        assert (stats.sent, stats.skipped) == (0, 3)
    assert smtp.messages == []


def test_reconcile_requeues_stalled_campaigns_and_reclaims_dead_claims(app, smtp):
    with app.app_context():
        mlist = make_list()
        subscribed_clients(mlist, 4)
        campaign = make_campaign([mlist.id])
        _start(campaign.id)
        crm.queue.broker.flush_all()  # the start's messages were lost
        # A worker claimed two rows and died.
        claimed = services.claim_batch(campaign.id, "dead:1:1", 2, utcnow())
        assert len(claimed) == 2
        later = utcnow() + timedelta(seconds=app.config.get("CRM_CAMPAIGN_CLAIM_TIMEOUT", 600))
        figures = services.reconcile(later + timedelta(seconds=1))
        db.session.commit()
        assert figures["reclaimed"] == 2
        assert figures["requeued"] == 1
        queued = sum(q.qsize() for q in crm.queue.broker.queues.values())
        assert queued >= 1
        assert services.campaign_stats(campaign.id).pending == 4
        assert services.work_on_campaign(campaign.id) == "done"
        # Nothing pending any more: reconcile has nothing to do.
        crm.queue.broker.flush_all()
        assert services.reconcile(later + timedelta(hours=1))["requeued"] == 0
    assert len(smtp.messages) == 4


def test_reconcile_starts_due_scheduled_campaigns(app, smtp):
    with app.app_context():
        mlist = make_list()
        subscribed_clients(mlist, 2)
        campaign = make_campaign([mlist.id])
        services.schedule(campaign, utcnow() + timedelta(hours=1), campaign.created_by)
        db.session.commit()
        assert services.reconcile()["started"] == 0
        later = utcnow() + timedelta(hours=2)
        figures = services.reconcile(later)
        db.session.commit()
        assert figures["started"] == 1
        assert db.session.get(Campaign, campaign.id).status == "sending"
        assert services.work_on_campaign(campaign.id, clock=lambda: later) == "done"
    assert len(smtp.messages) == 2


def test_one_delivery_per_campaign_and_client(app, smtp):
    with app.app_context():
        first = make_list("Tygodnik")
        second = make_list("Miesięcznik")
        clients = subscribed_clients(first, 2)
        mailing.subscribe(clients[0], db.session.get(MailingList, second.id))
        db.session.commit()
        campaign = make_campaign([first.id, second.id])
        assert _start(campaign.id) == 2  # on both lists, still one recipient
        with pytest.raises(services.CampaignError):
            services.start_sending(campaign, None)
        db.session.rollback()
        row = _deliveries(campaign.id)[clients[0].email]
        assert row.list_id == min(first.id, second.id)
        with pytest.raises(IntegrityError), db.session.begin_nested():
            db.session.add(
                Delivery(campaign_id=campaign.id, client_id=clients[0].id, email="x@example.pl")
            )
            db.session.flush()


def test_a_saved_filter_narrows_the_audience_within_the_senders_scope(app, smtp):
    from crm.search.models import SavedFilter
    from crm.search.services import parse_query
    from crm.search.tree import to_dict

    with app.app_context():
        mlist = make_list()
        clients = subscribed_clients(mlist, 3)
        clients[1].city = "Łódź"
        db.session.commit()
        campaign = make_campaign([mlist.id])
        tree = parse_query('city = "Łódź"')
        saved = SavedFilter(name="Łódź", owner_id=campaign.created_by_id, tree=to_dict(tree))
        db.session.add(saved)
        db.session.commit()
        campaign.saved_filter_id = saved.id
        db.session.commit()
        assert _start(campaign.id) == 1
        services.work_on_campaign(campaign.id)
        target = clients[1].email
    assert smtp.recipients() == [target]
