from __future__ import annotations

from flask import g

from crm.extensions import db
from crm.org.models import Organisation


def organisation() -> Organisation:
    """The organisation row, created with defaults on first use; cached per request."""
    cached = g.get("_organisation")
    if cached is not None:
        return cached
    org = db.session.get(Organisation, 1)
    if org is None:
        org = Organisation(id=1)
        db.session.add(org)
        db.session.flush()
    g._organisation = org
    return org
