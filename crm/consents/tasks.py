"""The consent ledger's periodic jobs (see crm.scheduler): the expiry sweep and
retention. Each takes the time to act for, flushes, and leaves the commit to the runner.

The expiry sweep runs hourly, so an "expired" event is on record within the hour; the
consent stops counting at its expiry instant regardless (may_contact compares times).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from crm.consents import services
from crm.scheduler import periodic


@periodic("consents.expiry", every=timedelta(hours=1))
def consent_expiry(now: datetime) -> dict[str, int]:
    """Record expired consents; open a task for each consent entering its warning window."""
    return services.sweep_expiry(now).as_dict()


@periodic("consents.retention", every=timedelta(hours=24))
def consent_retention(now: datetime) -> dict[str, int]:
    """Review task or anonymisation for clients whose every purpose ended past retention."""
    return services.apply_retention(now).as_dict()
