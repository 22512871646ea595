"""The demo data includes a list group with two lists and subscriptions that agree
with the ledger."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.demo import fill_demo
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import ListGroup, MailingList, Subscription, SubscriptionEvent


def test_demo_fills_lists_and_subscriptions(app):
    with app.app_context():
        stats = fill_demo(120, seed=5)
        assert stats["list subscriptions"] > 10
        [group] = db.session.scalars(select(ListGroup)).all()
        lists = db.session.scalars(select(MailingList).order_by(MailingList.name)).all()
        assert [m.group_id for m in lists] == [group.id, group.id]
        ids = db.session.scalars(select(Subscription.client_id)).all()
        assert len(ids) == len(set(ids)) == stats["list subscriptions"]
        # Every demo subscriber may be mailed: the ledger agrees.
        for mlist in lists:
            audience = db.session.scalars(services.audience_client_ids([mlist.id])).all()
            assert services.blocked_client_ids(audience, mlist.id) == {
                cid: "no_email"
                for cid, email in db.session.execute(
                    select(services.Client.id, services.Client.email).where(
                        services.Client.id.in_(audience)
                    )
                )
                if not email
            }
        assert db.session.scalar(select(func.count()).select_from(SubscriptionEvent)) == len(ids)
        fill_demo(10, seed=6)  # a second run reuses the lists
        assert db.session.scalar(select(func.count()).select_from(MailingList)) == 2
