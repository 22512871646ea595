"""The audit log viewer at /admin/audit."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, select

from crm.audit.models import AuditEntry
from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.clients.models import Client
from crm.extensions import db
from crm.org.services import organisation
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("audit", __name__, url_prefix="/admin/audit", template_folder="templates")

PAGE = 50

ACTIONS = {
    "login": _l("Signed in"),
    "login_failed": _l("Failed sign-in"),
    "unlock": _l("Unlocked after idle"),
    "unlock_failed": _l("Failed unlock"),
    "client.view": _l("Client viewed"),
    "client.create": _l("Client created"),
    "client.update": _l("Client changed"),
    "client.delete": _l("Client deleted"),
    "field.create": _l("Field added"),
    "field.update": _l("Field changed"),
    "field.archive": _l("Field archived"),
    "field.restore": _l("Field restored"),
    "clients.export": _l("Clients exported"),
    "clients.mass_tag_add": _l("Tag added to many clients"),
    "clients.mass_tag_remove": _l("Tag removed from many clients"),
    "clients.mass_owner": _l("Owner assigned to many clients"),
    "saved_filter.create": _l("Filter saved"),
    "saved_filter.update": _l("Saved filter changed"),
    "saved_filter.delete": _l("Saved filter deleted"),
    "2fa_enabled": _l("2FA turned on"),
    "2fa_disabled": _l("2FA turned off"),
    "2fa_failed": _l("Wrong 2FA code"),
    "2fa_recovery_code_used": _l("Recovery code used"),
    "2fa_recovery_codes_renewed": _l("Recovery codes renewed"),
    "2fa_reset": _l("2FA reset"),
    "user_invited": _l("User invited"),
    "invite_accepted": _l("Invitation accepted"),
    "user_updated": _l("User changed"),
    "user_deactivated": _l("User deactivated"),
    "user_reactivated": _l("User reactivated"),
    "password_reset_sent": _l("Password reset sent"),
    "password_changed": _l("Password changed"),
    "password_change_failed": _l("Failed password change"),
    "role_created": _l("Role created"),
    "role_updated": _l("Role changed"),
    "role_deleted": _l("Role deleted"),
    "team_created": _l("Team created"),
    "team_renamed": _l("Team renamed"),
    "team_deleted": _l("Team deleted"),
    "consent.given": _l("Consent given"),
    "consent.renewed": _l("Consent renewed"),
    "consent.refused": _l("Consent refused"),
    "consent.withdrawn": _l("Consent withdrawn"),
    "consent.expired": _l("Consent expired"),
    "consent.invalidated": _l("Consent invalidated"),
    "consent.renewal_sent": _l("Renewal request sent"),
    "consent.sweep": _l("Consent expiry sweep"),
    "consent.rebuild": _l("Consent states rebuilt"),
    "purpose.create": _l("Purpose added"),
    "purpose.update": _l("Purpose changed"),
    "purpose.archive": _l("Purpose archived"),
    "purpose.restore": _l("Purpose restored"),
    "client.anonymise": _l("Client anonymised"),
    "mailing.group_create": _l("List group added"),
    "mailing.group_update": _l("List group changed"),
    "mailing.list_create": _l("Mailing list added"),
    "mailing.list_update": _l("Mailing list changed"),
    "mailing.import": _l("Clients imported into a list"),
    "mailing.suppress": _l("Address suppressed"),
    "mailing.unconfirmed": _l("Subscription requested"),
    "mailing.confirmed": _l("Subscription confirmed"),
    "mailing.unsubscribed": _l("Unsubscribed"),
    "campaign.create": _l("Campaign created"),
    "campaign.update": _l("Campaign changed"),
    "campaign.delete": _l("Campaign deleted"),
    "campaign.test_send": _l("Campaign test sent"),
    "campaign.schedule": _l("Campaign scheduled"),
    "campaign.schedule_failed": _l("Scheduled campaign failed to start"),
    "campaign.unschedule": _l("Campaign unscheduled"),
    "campaign.send": _l("Campaign sending started"),
    "campaign.pause": _l("Campaign paused"),
    "campaign.resume": _l("Campaign resumed"),
    "campaign.cancel": _l("Campaign cancelled"),
    "request.create": _l("Data-subject request registered"),
    "request.update": _l("Data-subject request changed"),
    "request.extend": _l("Request deadline extended"),
    "request.close": _l("Data-subject request closed"),
    "request.deadlines": _l("Request deadline tasks"),
    "privacy.export_started": _l("Data export started"),
    "privacy.export_downloaded": _l("Data export downloaded"),
    "privacy.export_cli": _l("Data exported (command line)"),
    "client.restrict": _l("Processing restricted"),
    "client.restriction_lift": _l("Restriction lifted"),
    "calendar_feed.create": _l("Calendar link made"),
    "calendar_feed.revoke": _l("Calendar link revoked"),
    "client.sms_opt_out": _l("SMS opt-out set"),
    "client.sms_opt_in": _l("SMS opt-out cleared"),
}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _filters() -> dict[str, Any]:
    args = request.args
    action = args.get("action", "")
    return {
        "user": _int(args.get("user")),
        "client": _int(args.get("client")),
        "action": action if action in ACTIONS else "",
        "date_from": _day(args.get("from")),
        "date_to": _day(args.get("to")),
    }


def _query(filters: dict[str, Any]) -> Select[tuple[AuditEntry]]:
    query = select(AuditEntry)
    if filters["user"]:
        query = query.where(AuditEntry.actor_id == filters["user"])
    if filters["client"]:
        query = query.where(AuditEntry.client_id == filters["client"])
    if filters["action"]:
        query = query.where(AuditEntry.action == filters["action"])
    # Dates are days in the organisation's time zone.
    zone = ZoneInfo(organisation().timezone)
    if filters["date_from"]:
        start = datetime.combine(filters["date_from"], time.min, zone)
        query = query.where(AuditEntry.created_at >= start)
    if filters["date_to"]:
        end = datetime.combine(filters["date_to"] + timedelta(days=1), time.min, zone)
        query = query.where(AuditEntry.created_at < end)
    return query


def _short(value: Any) -> str:
    if value is None or value == "":
        return "∅"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "∅"
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def detail_lines(details: dict[str, Any] | None) -> list[str]:
    """A short rendering: field diffs as "field: old → new", other keys as "key: value"."""
    lines = []
    for key, value in (details or {}).items():
        if key == "changes" and isinstance(value, dict):
            for field, pair in value.items():
                old, new = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
                lines.append(f"{field}: {_short(old)} → {_short(new)}")
        else:
            lines.append(f"{key}: {_short(value)}")
    return lines


@bp.route("/")
@requires(Permission.AUDIT_VIEW)
def index() -> ResponseReturnValue:
    filters = _filters()
    query = _query(filters)
    before = _int(request.args.get("before"))
    if before:
        query = query.where(AuditEntry.id < before)
    rows = db.session.scalars(query.order_by(AuditEntry.id.desc()).limit(PAGE + 1)).all()
    entries, more = rows[:PAGE], len(rows) > PAGE
    client_ids = {e.client_id for e in entries if e.client_id}
    existing = (
        set(db.session.scalars(select(Client.id).where(Client.id.in_(client_ids))))
        if client_ids
        else set()
    )
    context = {
        "entries": entries,
        "next_before": entries[-1].id if more else None,
        "existing_clients": existing,
        "filters": filters,
        "actions": ACTIONS,
        "users": db.session.scalars(select(User).order_by(User.email)).all(),
        "detail_lines": detail_lines,
        "args": {k: v for k, v in request.args.items() if k != "before" and v},
    }
    if before:
        return render("audit/_rows.html", **context)
    return render("audit/index.html", "audit/_results.html", **context)
