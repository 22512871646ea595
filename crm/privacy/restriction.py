"""Restriction of processing (GDPR Art. 18): the client is kept but not used.

A restricted client (`Client.restricted_at` set, with a reason) is never contacted
(`crm.consents.policy.may_contact` / `contactable`, the mailing send-time checks
`recipient_block_reason` / `blocked_client_ids`, and through them campaigns), gets no
renewal reminders, is not anonymised by retention, and cannot be edited: every edit
route of the card and of the client's notes, files, tasks, deals, appointments,
consents and list subscriptions is refused by one request guard (`guard_restricted_edits`), and mass
actions leave restricted clients out. What stays allowed: viewing, exporting the data
to the person (Art. 15), erasure, lifting the restriction, and withdrawals (consent,
unsubscribing, the recipient's own unsubscribe link): withdrawing is always allowed.

Services flush; the caller commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user
from sqlalchemy import ColumnElement, and_, func, select
from werkzeug.exceptions import Conflict

from crm.audit.services import record
from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.extensions import db
from crm.sqltypes import utcnow

REASON_LIMIT = 300


class RestrictionError(ValueError):
    """A restriction change that cannot be made; the message is for the user."""


class ClientRestricted(Conflict):
    """409: the client's processing is restricted, so this change is refused. Shown by
    the app's error pages (in the flash area for htmx requests)."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return _("Processing restricted")

    def __init__(self) -> None:
        super().__init__(
            _(
                "Processing of this client's data is restricted: the card is kept but "
                "cannot be changed, and the client is not contacted. An administrator "
                "can lift the restriction on the card."
            )
        )


def is_restricted(client: Client) -> bool:
    return client.restricted_at is not None


def ensure_not_restricted(client: Client | int | None) -> None:
    """Raise ClientRestricted when `client` (an object or an id) is restricted."""
    if client is None:
        return
    if isinstance(client, Client):
        restricted = client.restricted_at is not None
    else:
        restricted = (
            db.session.scalar(select(Client.restricted_at).where(Client.id == int(client)))
            is not None
        )
    if restricted:
        raise ClientRestricted()


def restrict(
    client: Client, reason: str, by: User | None, *, request_id: int | None = None
) -> None:
    """Restrict processing of `client` with a reason (shown on the card)."""
    reason = " ".join((reason or "").split())
    if not reason:
        raise RestrictionError(_("Say why processing is restricted."))
    if len(reason) > REASON_LIMIT:
        raise RestrictionError(
            _("At most %(n)s characters, please.", n=REASON_LIMIT),
        )
    if client.restricted_at is not None:
        raise RestrictionError(_("Processing of this client's data is restricted already."))
    client.restricted_at = utcnow()
    client.restriction_reason = reason
    db.session.flush()
    details: dict[str, Any] = {"reason": reason}
    if request_id is not None:
        details["request_id"] = request_id
    record(
        "client.restrict",
        target_type="client",
        target_id=client.id,
        client_id=client.id,
        details=details,
        actor=by,
    )


def lift(client: Client, by: User | None, *, request_id: int | None = None) -> None:
    """Lift the restriction: the client is used (and editable) again."""
    if client.restricted_at is None:
        raise RestrictionError(_("Processing of this client's data is not restricted."))
    since = client.restricted_at
    client.restricted_at = None
    client.restriction_reason = ""
    db.session.flush()
    details: dict[str, Any] = {"restricted_since": since}
    if request_id is not None:
        details["request_id"] = request_id
    record(
        "client.restriction_lift",
        target_type="client",
        target_id=client.id,
        client_id=client.id,
        details=details,
        actor=by,
    )


# --- mass actions -------------------------------------------------------------------------


def unrestricted(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """`condition` narrowed to clients whose processing is not restricted."""
    return and_(condition, Client.restricted_at.is_(None))


def count_restricted(condition: ColumnElement[bool]) -> int:
    stmt = (
        select(func.count()).select_from(Client).where(condition, Client.restricted_at.is_not(None))
    )
    return db.session.scalar(stmt) or 0


def left_out_message(n: int) -> str:
    return ngettext(
        "%(num)s selected client is restricted (processing restricted) and is left as it is.",
        "%(num)s selected clients are restricted (processing restricted) and are left as they are.",
        n,
    )


# --- the request guard --------------------------------------------------------------------


def _view_arg(name: str) -> Callable[[], int | None]:
    def client_id() -> int | None:
        value = (request.view_args or {}).get(name)
        return int(value) if value is not None else None

    return client_id


def _owner_of(model_name: str, arg: str) -> Callable[[], int | None]:
    """The client id of the row named by the view argument `arg` (a note, file, task,
    deal); None when it has no client or does not exist (the route answers 404)."""

    def client_id() -> int | None:
        from crm.attachments.models import Attachment
        from crm.deals.models import Deal
        from crm.notes.models import Note
        from crm.tasks.models import Task

        models: dict[str, Any] = {
            "note": Note,
            "attachment": Attachment,
            "task": Task,
            "deal": Deal,
        }
        if model_name == "appointment":
            from crm.appointments.models import Appointment

            models["appointment"] = Appointment
        model = models[model_name]
        value = (request.view_args or {}).get(arg)
        if value is None:
            return None
        found = db.session.scalar(select(model.client_id).where(model.id == int(value)))
        return int(found) if found is not None else None

    return client_id


def _form_client() -> int | None:
    """A client chosen in a form or named in the address (new task or deal)."""
    raw = request.values.get("client_id", "")
    return int(raw) if raw.isdigit() else None


# Every route that changes a client or what hangs off it, and how it names the client.
# Withdrawals (consents.withdraw, mailing.card_unsubscribe, card_unsubscribe_all, the
# public unsubscribe page), the privacy routes and read-only pages are not here.
# tests/privacy/test_restriction.py walks the URL map so a new client route must be
# listed here or among the allowed ones there.
GUARDED: dict[str, Callable[[], int | None]] = {
    "clients.edit": _view_arg("client_id"),
    "clients.edit_group": _view_arg("client_id"),
    "clients.delete": _view_arg("client_id"),
    "attachments.upload": _view_arg("client_id"),
    "attachments.delete": _owner_of("attachment", "attachment_id"),
    "notes.create": _view_arg("client_id"),
    "notes.delete": _owner_of("note", "note_id"),
    "consents.record": _view_arg("client_id"),
    "consents.send_renewal": _view_arg("client_id"),
    "mailing.card_subscribe": _view_arg("client_id"),
    "tasks.client_create": _view_arg("client_id"),
    "tasks.create": _form_client,
    "tasks.edit": _owner_of("task", "task_id"),
    "tasks.complete": _owner_of("task", "task_id"),
    "tasks.reopen": _owner_of("task", "task_id"),
    "tasks.delete": _owner_of("task", "task_id"),
    "deals.create": _form_client,
    "deals.edit": _owner_of("deal", "deal_id"),
    "deals.change_stage": _owner_of("deal", "deal_id"),
    "deals.delete": _owner_of("deal", "deal_id"),
    # Booking, rescheduling and marking an appointment use the client's data;
    # cancelling one (which only stops processing) stays open.
    "appointments.book": _form_client,
    "appointments.show": _owner_of("appointment", "appointment_id"),
    "appointments.change_status": _owner_of("appointment", "appointment_id"),
    "appointments.reschedule": _owner_of("appointment", "appointment_id"),
}

# Routes that may move a row onto another client: the target is checked too.
RETARGETING = {"deals.edit", "tasks.edit"}
# Routes whose GET only shows the row (the page stays readable).
CHANGING_ONLY = {"appointments.show"}


def guard_restricted_edits() -> None:
    """Before-request hook: refuse (409) any guarded route for a restricted client.

    Only for a signed-in user, and only for clients within their scope: anyone else
    gets what the route itself answers (login, 403, 404), so the hook tells nobody
    outside the scope that a client exists or is restricted."""
    find = GUARDED.get(request.endpoint or "")
    if find is None or not current_user.is_authenticated:
        return
    if request.endpoint in CHANGING_ONLY and request.method in ("GET", "HEAD"):
        return
    ids = {find()}
    if request.endpoint in RETARGETING and request.method == "POST":
        ids.add(_form_client())
    ids.discard(None)
    if not ids:
        return
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    restricted = db.session.scalar(
        select(Client.id)
        .where(Client.id.in_(ids), Client.restricted_at.is_not(None), visible_clients(user))
        .limit(1)
    )
    if restricted is not None:
        raise ClientRestricted()
