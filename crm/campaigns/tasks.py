"""Campaign actors and the periodic reconcile job.

`send_campaign(campaign_id)` is a nudge: it sends batches while the database says the
campaign is sending and has due rows, so a duplicate or late message is harmless. The
reconcile job is what makes sending survive a dead worker or a lost message.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from crm.queue import actor
from crm.scheduler import periodic


@actor(max_retries=3, min_backoff=5_000, time_limit=15 * 60 * 1000)
def send_campaign(campaign_id: int) -> None:
    from crm.campaigns.services import work_on_campaign

    work_on_campaign(int(campaign_id))


@periodic("campaigns.reconcile", every=timedelta(minutes=1))
def campaigns_reconcile(now: datetime) -> dict[str, int]:
    """Start due scheduled campaigns; re-enqueue stalled ones; give back dead claims."""
    from crm.campaigns.services import reconcile

    return reconcile(now)
