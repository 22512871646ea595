"""The demo data includes purposes and consents, consistent with the ledger's rules."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.consents import services
from crm.consents.models import ConsentEvent, ConsentPurpose, ConsentState
from crm.demo import fill_demo
from crm.extensions import db


def test_demo_fills_purposes_and_consents(app):
    with app.app_context():
        stats = fill_demo(80, seed=3)
        assert stats["consent events"] > 40
        keys = set(db.session.scalars(select(ConsentPurpose.key)))
        assert {"newsletter", "reminders", "contract"} <= keys
        events = db.session.scalar(select(func.count()).select_from(ConsentEvent))
        assert events >= stats["consent events"]  # plus the expiries the sweep recorded
        before = {
            (s.client_id, s.purpose_id): (s.status, s.expires_at)
            for s in db.session.scalars(select(ConsentState))
        }
        services.rebuild_states()
        after = {
            (s.client_id, s.purpose_id): (s.status, s.expires_at)
            for s in db.session.scalars(select(ConsentState))
        }
        assert after == before
        # A second demo run reuses the purposes.
        fill_demo(10, seed=4)
        assert db.session.scalar(select(func.count()).select_from(ConsentPurpose)) == 3
