"""Mailing lists. Services change state and flush; the caller commits once.

Every subscription change goes through the consent ledger (the list's purpose): a
confirmed subscription records "given", leaving the last list of a purpose records
"withdrawn". Each change also writes a SubscriptionEvent (insert-only history with the
evidence) and an audit entry.

The sending side (campaigns) uses: `audience_client_ids`, `recipient_block_reason`,
`blocked_client_ids`, `unsubscribe_url`, `suppression_hash`/`is_suppressed`/`suppress`
and `unsubscribes_for_campaign`. Their names and meanings are kept stable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from flask import current_app, has_request_context, url_for
from flask_babel import force_locale, format_date
from flask_babel import gettext as _
from itsdangerous import BadData, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import Integer, Select, String, and_, any_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from crm.audit.services import changes_details, record
from crm.auth.models import User
from crm.clients.models import Client
from crm.consents import services as ledger
from crm.consents.models import (
    Channel,
    ConsentEvent,
    ConsentNotice,
    ConsentPurpose,
    ConsentState,
    ConsentStatus,
    EventKind,
    Method,
)
from crm.consents.policy import may_contact
from crm.consents.services import ConsentError, Evidence, now_utc, valid_condition
from crm.extensions import db
from crm.mailing.bulk import insert_many
from crm.mailing.models import (
    EventSource,
    ListGroup,
    MailingList,
    OptIn,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
    Suppression,
    SuppressionKey,
    SuppressionKind,
    SuppressionReason,
    SuppressionScheme,
)
from crm.org.services import organisation
from crm.queue import enqueue_after_commit

CONFIRM_SALT = "crm.mailing.confirm"
UNSUBSCRIBE_SALT = "crm.mailing.unsubscribe"
CONFIRM_DAYS = 7

CONFIRMED = SubscriptionStatus.CONFIRMED.value
UNCONFIRMED = SubscriptionStatus.UNCONFIRMED.value
UNSUBSCRIBED = SubscriptionStatus.UNSUBSCRIBED.value

# Reason codes of recipient_block_reason / blocked_client_ids.
NO_EMAIL = "no_email"
SUPPRESSED = "suppressed"
NOT_SUBSCRIBED = "unsubscribed"
NO_CONSENT = "no_consent"
LIST_ARCHIVED = "list_archived"
RESTRICTED = "restricted"  # processing restricted (GDPR Art. 18): kept, never used


class MailingError(ValueError):
    """A change that cannot be made; the message is shown to the user."""


class LinkError(Exception):
    """Why a confirmation or unsubscribe link cannot be used: "invalid" (tampered,
    unknown), "expired", "void" (replaced or no longer pending)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- suppression -----------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """The form an address is hashed in: NFC, trimmed, lower-cased. Local parts are
    case-sensitive in theory only; no mail provider treats them so."""
    return unicodedata.normalize("NFC", (email or "").strip()).lower()


def _suppression_key() -> bytes:
    """The installation's HMAC key (SuppressionKey, made by migration 0011), read once
    per process and database: it never changes once made."""
    cache = current_app.extensions.setdefault("crm.suppression_keys", {})
    bind = db.session.get_bind()
    url = bind.engine.url.render_as_string(hide_password=False)
    key = cache.get(url)
    if key is None:
        secret = db.session.scalar(
            select(SuppressionKey.secret).order_by(SuppressionKey.id).limit(1)
        )
        if not secret:
            raise RuntimeError("No suppression key: run `flask --app crm db upgrade`.")
        key = cache[url] = secret.encode("utf-8")
    return key  # type: ignore[no-any-return]


def _keyed(kind: str, normal: str) -> str:
    message = f"{kind}:{normal}".encode()
    return hmac.new(_suppression_key(), message, hashlib.sha256).hexdigest()


def suppression_hash(email: str) -> str:
    """What the suppression list stores for an address: HMAC-SHA256 (hex) of the
    normalised address under the installation's key."""
    return _keyed(SuppressionKind.EMAIL.value, normalise_email(email))


def legacy_suppression_hash(email: str) -> str:
    """The unkeyed SHA-256 of entries written before migration 0011 (still checked)."""
    return hashlib.sha256(normalise_email(email).encode("utf-8")).hexdigest()


def normalise_phone(phone: str, region: str | None = None) -> str:
    """E.164 (`+48601234567`), reading national numbers in `region` (default: the
    organisation's phone region); "" for something that is not a phone number."""
    raw = (phone or "").strip()
    if not raw:
        return ""
    region = region or organisation().default_phone_region or "PL"
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_possible_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_suppression_hash(phone: str, region: str | None = None) -> str:
    """The stored form of a phone number ("" when it is not one)."""
    normal = normalise_phone(phone, region)
    return _keyed(SuppressionKind.PHONE.value, normal) if normal else ""


def _stored(digests: Sequence[str]) -> bool:
    return (
        db.session.scalar(
            select(Suppression.id).where(Suppression.email_hash.in_(list(digests))).limit(1)
        )
        is not None
    )


def is_suppressed(email: str) -> bool:
    if not normalise_email(email):
        return False
    return _stored([suppression_hash(email), legacy_suppression_hash(email)])


def is_phone_suppressed(phone: str, region: str | None = None) -> bool:
    """Whether this number must not be contacted (SMS reminders ask this)."""
    digest = phone_suppression_hash(phone, region)
    return bool(digest) and _stored([digest])


def _add_suppression(digest: str, kind: SuppressionKind, reason: str) -> bool:
    if db.session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)):
        return False
    try:
        with db.session.begin_nested():
            db.session.add(
                Suppression(
                    email_hash=digest,
                    kind=kind.value,
                    scheme=SuppressionScheme.KEYED.value,
                    reason=reason,
                    created_at=now_utc(None),
                )
            )
    except IntegrityError:  # added by a concurrent request meanwhile
        return False
    return True


def suppress(email: str, reason: SuppressionReason | str) -> None:
    """Never mail this address again. Idempotent: the first entry (and reason) stays."""
    reason = SuppressionReason(reason).value
    if not normalise_email(email):
        return
    if db.session.scalar(
        select(Suppression.id).where(Suppression.email_hash == legacy_suppression_hash(email))
    ):
        return
    if _add_suppression(suppression_hash(email), SuppressionKind.EMAIL, reason):
        record("mailing.suppress", target_type="suppression", details={"reason": reason})


def suppress_phone(phone: str, reason: SuppressionReason | str, region: str | None = None) -> None:
    """Never contact this phone number again (idempotent, like `suppress`)."""
    reason = SuppressionReason(reason).value
    digest = phone_suppression_hash(phone, region)
    if digest and _add_suppression(digest, SuppressionKind.PHONE, reason):
        record(
            "mailing.suppress",
            target_type="suppression",
            details={"reason": reason, "kind": SuppressionKind.PHONE.value},
        )


def suppressed_emails(emails: Iterable[str]) -> set[str]:
    """The normalised forms of those of `emails` that are suppressed, in one query per
    500 addresses, testing the keyed and the legacy form of each."""
    forms: dict[str, str] = {}
    for normal in {normalise_email(email) for email in emails} - {""}:
        forms[suppression_hash(normal)] = normal
        forms[legacy_suppression_hash(normal)] = normal
    return {forms[digest] for digest in suppressed_hashes(forms)}


def _reasons(forms: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    digests = list(forms)
    for start in range(0, len(digests), 500):
        chunk = digests[start : start + 500]
        rows = db.session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                among(Suppression.email_hash, chunk, String())
            )
        )
        for digest, reason in rows:
            found.setdefault(forms[digest], reason)
    return found


def suppression_reasons(emails: Iterable[str]) -> dict[str, str]:
    """{normalised address: reason} for those of `emails` that are suppressed."""
    forms: dict[str, str] = {}
    for normal in {normalise_email(email) for email in emails} - {""}:
        forms[suppression_hash(normal)] = normal
        forms[legacy_suppression_hash(normal)] = normal
    return _reasons(forms)


def phone_suppression_reasons(phones: Iterable[str], region: str | None = None) -> dict[str, str]:
    """{E.164 number: reason} for those of `phones` that are suppressed."""
    forms: dict[str, str] = {}
    for phone in set(phones):
        normal = normalise_phone(phone, region)
        if normal:
            forms[_keyed(SuppressionKind.PHONE.value, normal)] = normal
    return _reasons(forms)


def among(column: Any, values: list[Any], item_type: Any) -> Any:
    """`column IN values`; on PostgreSQL `column = ANY(array)`, one parameter instead
    of one per value (a batch of 500 placeholders took longer to send and plan than
    the query took to run)."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam("among", values, type_=ARRAY(item_type)))
    return column.in_(values)


def suppressed_hashes(hashes: Iterable[str]) -> set[str]:
    wanted = list(set(hashes))
    if not wanted:
        return set()
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            db.session.scalars(
                select(Suppression.email_hash).where(among(Suppression.email_hash, chunk, String()))
            )
        )
    return found


# --- groups and lists ------------------------------------------------------------------


def _clean(text_: str | None, limit: int) -> str:
    return " ".join((text_ or "").split())[:limit]


def all_groups() -> list[ListGroup]:
    return list(db.session.scalars(select(ListGroup).order_by(ListGroup.name)))


def all_lists() -> list[MailingList]:
    return list(
        db.session.scalars(
            select(MailingList).order_by(MailingList.archived_at.is_not(None), MailingList.name)
        )
    )


def find_list(name: str) -> MailingList | None:
    """By name, ignoring case (names are unique ignoring case)."""
    wanted = _clean(name, 120).lower()
    return db.session.scalar(select(MailingList).where(func.lower(MailingList.name) == wanted))


def _check_group_name(name: str, exclude_id: int | None) -> str:
    name = _clean(name, 120)
    if not name:
        raise MailingError(_("A group needs a name."))
    stmt = select(ListGroup.id).where(func.lower(ListGroup.name) == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(ListGroup.id != exclude_id)
    if db.session.scalar(stmt) is not None:
        raise MailingError(_("There is already a group with this name."))
    return name


def create_group(name: str, description: str, by: User | None) -> ListGroup:
    group = ListGroup(name=_check_group_name(name, None), description=(description or "").strip())
    db.session.add(group)
    db.session.flush()
    record(
        "mailing.group_create",
        target_type="list_group",
        target_id=group.id,
        actor=by,
        details={"name": group.name},
    )
    return group


def update_group(group: ListGroup, name: str, description: str, by: User | None) -> None:
    values = {
        "name": _check_group_name(name, group.id),
        "description": (description or "").strip(),
    }
    changes = {k: (getattr(group, k), v) for k, v in values.items() if getattr(group, k) != v}
    for key, (_old, new) in changes.items():
        setattr(group, key, new)
    db.session.flush()
    if changes:
        record(
            "mailing.group_update",
            target_type="list_group",
            target_id=group.id,
            actor=by,
            details=changes_details(changes),
        )


def set_group_archived(group: ListGroup, archived: bool, by: User | None) -> None:
    if group.is_archived == archived:
        return
    group.archived_at = now_utc(None) if archived else None
    db.session.flush()
    action = "mailing.group_archive" if archived else "mailing.group_restore"
    record(action, target_type="list_group", target_id=group.id, actor=by)


@dataclass
class ListSpec:
    name: str
    purpose_id: int
    description: str = ""
    group_id: int | None = None
    opt_in: OptIn = OptIn.SINGLE


def check_list_spec(spec: ListSpec, exclude_id: int | None = None) -> ListSpec:
    """The list's rules; MailingError names what is wrong. Returns the cleaned spec."""
    name = _clean(spec.name, 120)
    if not name:
        raise MailingError(_("A list needs a name."))
    stmt = select(MailingList.id).where(func.lower(MailingList.name) == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(MailingList.id != exclude_id)
    if db.session.scalar(stmt) is not None:
        raise MailingError(_("There is already a list with this name."))
    purpose = db.session.get(ConsentPurpose, spec.purpose_id) if spec.purpose_id else None
    if purpose is None or purpose.is_archived:
        raise MailingError(_("Choose the purpose subscribers consent to."))
    if Channel.EMAIL.value not in (purpose.channels or []):
        raise MailingError(_("The purpose must cover the email channel."))
    if spec.group_id is not None and db.session.get(ListGroup, spec.group_id) is None:
        raise MailingError(_("Pick a group from the list."))
    return ListSpec(
        name=name,
        purpose_id=purpose.id,
        description=(spec.description or "").strip(),
        group_id=spec.group_id,
        opt_in=OptIn(spec.opt_in),
    )


def _apply_list_spec(mlist: MailingList, spec: ListSpec) -> dict[str, tuple[Any, Any]]:
    values = {
        "name": spec.name,
        "description": spec.description,
        "group_id": spec.group_id,
        "opt_in": OptIn(spec.opt_in).value,
        "purpose_id": spec.purpose_id,
    }
    changes = {}
    for key, new in values.items():
        old = getattr(mlist, key, None)
        if old != new:
            changes[key] = (old, new)
            setattr(mlist, key, new)
    return changes


def create_list(spec: ListSpec, by: User | None) -> MailingList:
    spec = check_list_spec(spec)
    mlist = MailingList()
    changes = _apply_list_spec(mlist, spec)
    db.session.add(mlist)
    db.session.flush()
    record(
        "mailing.list_create",
        target_type="mailing_list",
        target_id=mlist.id,
        actor=by,
        details=changes_details(changes),
    )
    return mlist


def update_list(mlist: MailingList, spec: ListSpec, by: User | None) -> dict[str, Any]:
    spec = check_list_spec(spec, exclude_id=mlist.id)
    if spec.purpose_id != mlist.purpose_id and _has_subscribers(mlist.id):
        # Existing consents were given for the old purpose; moving them would claim a
        # consent nobody gave.
        raise MailingError(_("The purpose cannot change once the list has subscribers."))
    changes = _apply_list_spec(mlist, spec)
    db.session.flush()
    if changes:
        record(
            "mailing.list_update",
            target_type="mailing_list",
            target_id=mlist.id,
            actor=by,
            details=changes_details(changes),
        )
    return changes


def _has_subscribers(list_id: int) -> bool:
    return (
        db.session.scalar(select(Subscription.id).where(Subscription.list_id == list_id).limit(1))
        is not None
    )


def set_list_archived(mlist: MailingList, archived: bool, by: User | None) -> None:
    """Archiving hides a list from subscribing and switching and stops its mailing
    (recipient_block_reason: "list_archived"); subscriptions and history stay."""
    if mlist.is_archived == archived:
        return
    mlist.archived_at = now_utc(None) if archived else None
    db.session.flush()
    action = "mailing.list_archive" if archived else "mailing.list_restore"
    record(action, target_type="mailing_list", target_id=mlist.id, actor=by)


def list_counts() -> dict[int, dict[str, int]]:
    """Subscribers per list and status, in one grouped query."""
    counts: dict[int, dict[str, int]] = {}
    rows = db.session.execute(
        select(Subscription.list_id, Subscription.status, func.count()).group_by(
            Subscription.list_id, Subscription.status
        )
    )
    for list_id, status, n in rows:
        counts.setdefault(list_id, {})[status] = n
    return counts


def subscribers_stmt(list_id: int, status: str | None = None) -> Select[Any]:
    stmt = (
        select(Subscription)
        .join(Client, Client.id == Subscription.client_id)
        .where(Subscription.list_id == list_id)
        .order_by(Client.last_name, Client.first_name, Client.id)
    )
    if status in {s.value for s in SubscriptionStatus}:
        stmt = stmt.where(Subscription.status == status)
    return stmt


# --- the ledger side of a subscription -------------------------------------------------


def _notice(purpose: ConsentPurpose, language: str | None = None) -> ConsentNotice:
    notices = ledger.latest_notices(purpose.id)
    notice = (
        notices.get(language or "")
        or notices.get(organisation().default_locale)
        or next(iter(notices.values()), None)
    )
    if notice is None:
        raise MailingError(_("The list's purpose has no notice text."))
    return notice


def _give(
    client_id: int,
    mlist: MailingList,
    method: Method,
    actor: User | None,
    evidence: Evidence,
    note: str,
    now: datetime,
) -> int:
    try:
        event = ledger.record_event(
            client_id,
            mlist.purpose,
            EventKind.GIVEN,
            method,
            notice=_notice(mlist.purpose),
            actor=actor,
            evidence=evidence,
            note=note,
            now=now,
        )
    except ConsentError as exc:
        raise MailingError(str(exc)) from None
    return event.id


def _withdraw_if_last(
    sub: Subscription, method: Method, actor: User | None, evidence: Evidence, now: datetime
) -> int | None:
    """Withdraw the purpose's consent unless another confirmed subscription of this
    client rests on the same purpose (two lists may share one purpose)."""
    others = db.session.scalar(
        select(Subscription.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            Subscription.client_id == sub.client_id,
            Subscription.id != sub.id,
            Subscription.status == CONFIRMED,
            MailingList.purpose_id == sub.mailing_list.purpose_id,
        )
        .limit(1)
    )
    if others is not None:
        return None
    state = db.session.scalar(
        select(ConsentState).where(
            ConsentState.client_id == sub.client_id,
            ConsentState.purpose_id == sub.mailing_list.purpose_id,
        )
    )
    if state is None or not ledger.is_valid(state.status, state.expires_at, now):
        return None  # nothing counts any more: there is nothing to withdraw
    event = ledger.record_event(
        sub.client_id,
        sub.mailing_list.purpose,
        EventKind.WITHDRAWN,
        method,
        actor=actor,
        evidence=evidence,
        note=f"mailing list: {sub.mailing_list.name}"[:500],
        now=now,
    )
    return event.id


def _known_campaign(campaign_id: int | None) -> int | None:
    """The campaign id if it names a campaign. A link outlives its campaign (deleted
    drafts, tests): the unsubscribe still happens, only without the count."""
    if campaign_id is None:
        return None
    table = db.metadata.tables.get("campaigns")
    if table is None:
        return campaign_id
    found = db.session.scalar(select(table.c.id).where(table.c.id == campaign_id))
    return int(found) if found is not None else None


def _history(
    sub: Subscription,
    old: str,
    source: EventSource,
    actor: User | None,
    evidence: Evidence,
    now: datetime,
    campaign_id: int | None = None,
    consent_event_id: int | None = None,
) -> SubscriptionEvent:
    campaign_id = _known_campaign(campaign_id)
    event = SubscriptionEvent(
        subscription_id=sub.id,
        client_id=sub.client_id,
        list_id=sub.list_id,
        old_status=old,
        status=sub.status,
        occurred_at=now,
        ip=evidence.ip[:45],
        user_agent=evidence.user_agent[:300],
        source=EventSource(source).value,
        actor_id=actor.id if actor else None,
        campaign_id=campaign_id,
        consent_event_id=consent_event_id,
    )
    db.session.add(event)
    db.session.flush()
    details: dict[str, Any] = {
        "list": sub.mailing_list.name,
        "status": [old or None, sub.status],
        "source": event.source,
    }
    if campaign_id is not None:
        details["campaign_id"] = campaign_id
    record(
        f"mailing.{sub.status}",
        target_type="subscription",
        target_id=sub.id,
        client_id=sub.client_id,
        details=details,
        actor=actor,
    )
    return event


# --- subscribing -----------------------------------------------------------------------


def get_subscription(client_id: int, list_id: int) -> Subscription | None:
    return db.session.scalar(
        select(Subscription).where(
            Subscription.client_id == client_id, Subscription.list_id == list_id
        )
    )


def _method_for(source: EventSource) -> Method:
    return {
        EventSource.STAFF: Method.STAFF,
        EventSource.MASS: Method.STAFF,
        EventSource.IMPORT: Method.IMPORT,
        EventSource.CONFIRM: Method.DOUBLE_OPT_IN,
        EventSource.PAGE: Method.WEB_FORM,
        EventSource.ONE_CLICK: Method.EMAIL,
    }.get(source, Method.STAFF)


def subscribe(
    client: Client,
    mlist: MailingList,
    *,
    source: EventSource = EventSource.STAFF,
    actor: User | None = None,
    evidence: Evidence | None = None,
    now: datetime | None = None,
) -> Subscription:
    """Put the client on the list. A single opt-in list (or a change made from the
    client's own link, which proves the address) confirms at once and records consent
    "given"; a double opt-in list starts unconfirmed and emails a confirmation link
    after the commit. Already confirmed: nothing changes."""
    now = now_utc(now)
    evidence = evidence or Evidence()
    if mlist.is_archived:
        raise MailingError(_("This list is archived."))
    if not client.email:
        raise MailingError(_("The client has no email address."))
    if is_suppressed(client.email):
        raise MailingError(_("This address is on the suppression list and is never mailed."))
    if client.restricted_at is not None:
        raise MailingError(
            _("Processing of this client's data is restricted: no new subscriptions.")
        )
    sub = get_subscription(client.id, mlist.id)
    if sub is not None and sub.status == CONFIRMED:
        return sub
    old = sub.status if sub is not None else ""
    if sub is None:
        sub = Subscription(client_id=client.id, list_id=mlist.id, status="", created_at=now)
        sub.mailing_list = mlist
        db.session.add(sub)
    # The client's own links (page, one-click) already prove the address is theirs.
    proven = source in (EventSource.PAGE, EventSource.ONE_CLICK, EventSource.CONFIRM)
    if mlist.is_double and not proven:
        sub.status = UNCONFIRMED
        sub.confirm_nonce = secrets.token_hex(16)
        sub.updated_at = now
        db.session.flush()
        _history(sub, old, source, actor, evidence, now)
        from crm.mailing.tasks import send_confirmation

        enqueue_after_commit(send_confirmation, sub.id, sub.confirm_nonce)
        return sub
    sub.status = CONFIRMED
    sub.confirm_nonce = ""
    sub.updated_at = now
    db.session.flush()
    consent_id = _give(client.id, mlist, _method_for(source), actor, evidence, "", now)
    _history(sub, old, source, actor, evidence, now, consent_event_id=consent_id)
    return sub


def unsubscribe(
    sub: Subscription,
    *,
    source: EventSource = EventSource.STAFF,
    actor: User | None = None,
    evidence: Evidence | None = None,
    campaign_id: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Take the client off the list; records the withdrawal in the ledger (see
    _withdraw_if_last). Returns False when it was unsubscribed already."""
    now = now_utc(now)
    evidence = evidence or Evidence()
    if sub.status == UNSUBSCRIBED:
        return False
    old = sub.status
    sub.status = UNSUBSCRIBED
    sub.confirm_nonce = ""  # a pending confirmation link stops working
    sub.updated_at = now
    db.session.flush()
    consent_id = None
    if old == CONFIRMED:
        consent_id = _withdraw_if_last(sub, _method_for(source), actor, evidence, now)
    _history(sub, old, source, actor, evidence, now, campaign_id, consent_id)
    return True


def unsubscribe_all(
    client: Client,
    *,
    source: EventSource = EventSource.STAFF,
    actor: User | None = None,
    evidence: Evidence | None = None,
    now: datetime | None = None,
) -> int:
    """Every list, and the address onto the suppression list. Returns how many
    subscriptions ended."""
    now = now_utc(now)
    subs = db.session.scalars(
        select(Subscription).where(
            Subscription.client_id == client.id, Subscription.status != UNSUBSCRIBED
        )
    ).all()
    ended = sum(
        unsubscribe(s, source=source, actor=actor, evidence=evidence, now=now) for s in subs
    )
    if client.email:
        suppress(client.email, SuppressionReason.UNSUBSCRIBED_ALL)
    return ended


def switch_targets(mlist: MailingList) -> list[MailingList]:
    """The other live lists of the list's group (nothing when it has no group)."""
    if mlist.group_id is None:
        return []
    return list(
        db.session.scalars(
            select(MailingList)
            .where(
                MailingList.group_id == mlist.group_id,
                MailingList.id != mlist.id,
                MailingList.archived_at.is_(None),
            )
            .order_by(MailingList.name)
        )
    )


def switch(
    sub: Subscription,
    target: MailingList,
    *,
    source: EventSource = EventSource.PAGE,
    evidence: Evidence | None = None,
    campaign_id: int | None = None,
    now: datetime | None = None,
) -> Subscription:
    """Move from `sub`'s list to another live list of the same group. The new list is
    confirmed first, so a purpose shared by both lists is never withdrawn in between."""
    now = now_utc(now)
    current = sub.mailing_list
    if target.id not in {m.id for m in switch_targets(current)}:
        raise MailingError(_("You can only switch to another list of the same group."))
    client = db.session.get(Client, sub.client_id)
    assert client is not None
    new = subscribe(client, target, source=source, evidence=evidence, now=now)
    unsubscribe(sub, source=source, evidence=evidence, campaign_id=campaign_id, now=now)
    return new


ALREADY = "already"


def bulk_subscribe(
    client_ids: Sequence[int],
    mlist: MailingList,
    method: Method,
    actor: User | None,
    source: EventSource,
    note: str,
    now: datetime,
    notice_id: int | None = None,
) -> tuple[int, dict[int, str]]:
    """Confirmed subscriptions for up to a few thousand clients at once, set-based:
    the subscriptions, the consent events ("given", by `method`, under the purpose's
    newest notice) with their states, and the subscription events, one statement each.
    Clients already on the list, unsubscribed from it before (their choice stands),
    suppressed, restricted or without an address are skipped: returns (how many were
    subscribed, {client id: "already" / "unsubscribed" / "suppressed" / "restricted" /
    "no_email"}). The caller
    writes one audit entry for the whole batch."""
    ids = sorted({int(i) for i in client_ids})
    skipped: dict[int, str] = {}
    if not ids:
        return 0, skipped
    if notice_id is None:
        notice_id = _notice(mlist.purpose).id
    found = db.session.execute(
        select(Client.id, Client.email, Client.restricted_at).where(
            among(Client.id, ids, Integer())
        )
    ).all()
    emails = {row.id: row.email for row in found}
    restricted = {row.id for row in found if row.restricted_at is not None}
    subs = dict(
        db.session.execute(
            select(Subscription.client_id, Subscription.status).where(
                Subscription.list_id == mlist.id, among(Subscription.client_id, ids, Integer())
            )
        ).all()
    )
    suppressed = suppressed_emails(emails.values())
    to_subscribe = []
    for client_id in ids:
        email = emails.get(client_id) or ""
        status = subs.get(client_id)
        if not email:
            skipped[client_id] = NO_EMAIL
        elif normalise_email(email) in suppressed:
            skipped[client_id] = SUPPRESSED
        elif client_id in restricted:
            skipped[client_id] = RESTRICTED
        elif status == UNSUBSCRIBED:
            skipped[client_id] = NOT_SUBSCRIBED
        elif status is not None:
            skipped[client_id] = ALREADY
        else:
            to_subscribe.append(client_id)
    if not to_subscribe:
        return 0, skipped
    sub_ids = insert_many(
        Subscription.__table__,
        [
            {
                "client_id": cid,
                "list_id": mlist.id,
                "status": CONFIRMED,
                "confirm_nonce": "",
                "created_at": now,
                "updated_at": now,
            }
            for cid in to_subscribe
        ],
        returning=("id", "client_id"),
    )
    purpose = mlist.purpose
    expires_at = (
        ledger.add_months(now, purpose.validity_months) if purpose.validity_months else None
    )
    events = insert_many(
        ConsentEvent.__table__,
        [
            {
                "client_id": cid,
                "purpose_id": purpose.id,
                "notice_id": notice_id,
                "kind": EventKind.GIVEN.value,
                "method": method.value,
                "actor_id": actor.id if actor else None,
                "occurred_at": now,
                "recorded_at": now,
                "expires_at": expires_at,
                "source_url": "",
                "user_agent": "",
                "ip": "",
                "note": note,
            }
            for cid in to_subscribe
        ],
        returning=("id", "client_id"),
    )
    event_of = {cid: eid for eid, cid in events}
    states = dict(
        db.session.execute(
            select(ConsentState.client_id, ConsentState.id).where(
                ConsentState.purpose_id == purpose.id,
                among(ConsentState.client_id, to_subscribe, Integer()),
            )
        ).all()
    )
    state_values = {
        "status": ConsentStatus.GIVEN.value,
        "since": now,
        "expires_at": expires_at,
        "notice_id": notice_id,
        "warned_at": None,
        "ended_at": None,
        "updated_at": now,
    }
    fresh = [
        {
            "client_id": cid,
            "purpose_id": purpose.id,
            "basis_event_id": event_of[cid],
            **state_values,
        }
        for cid in to_subscribe
        if cid not in states
    ]
    if fresh:
        insert_many(ConsentState.__table__, fresh)
    stale = [
        {"id": states[cid], "basis_event_id": event_of[cid], **state_values}
        for cid in to_subscribe
        if cid in states
    ]
    if stale:
        db.session.execute(update(ConsentState), stale)
    insert_many(
        SubscriptionEvent.__table__,
        [
            {
                "subscription_id": sid,
                "client_id": cid,
                "list_id": mlist.id,
                "old_status": "",
                "status": CONFIRMED,
                "occurred_at": now,
                "ip": "",
                "user_agent": "",
                "source": EventSource(source).value,
                "actor_id": actor.id if actor else None,
                "campaign_id": None,
                "consent_event_id": event_of[cid],
            }
            for sid, cid in sub_ids
        ],
    )
    return len(sub_ids), skipped


# --- double opt-in ---------------------------------------------------------------------


def _timed_serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt=salt)


def _serializer(salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt=salt)


def confirmation_token(sub: Subscription) -> str:
    """Names the subscription, its client and list, and the request's nonce."""
    payload = [sub.id, sub.client_id, sub.list_id, sub.confirm_nonce]
    return _timed_serializer(CONFIRM_SALT).dumps(payload)  # type: ignore[no-any-return]


def public_url(endpoint: str, **values: Any) -> str:
    """An absolute link on CRM_BASE_URL that also works outside a request (workers
    build links for emails), where url_for has no host to use."""
    base = (current_app.config.get("CRM_BASE_URL") or "").rstrip("/")
    if has_request_context():
        if base:
            return base + url_for(endpoint, _external=False, **values)
        return url_for(endpoint, _external=True, **values)
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return (base or "http://localhost") + path


def confirmation_subscription(token: str) -> tuple[Subscription, bool]:
    """The subscription behind a confirmation link and whether it is confirmed already
    (a second click). LinkError: "invalid" (tampered or unknown), "expired", "void"
    (replaced by a newer request, or unsubscribed since)."""
    if not token or len(token) > 300:
        raise LinkError("invalid")
    try:
        payload = _timed_serializer(CONFIRM_SALT).loads(token, max_age=CONFIRM_DAYS * 86400)
        sub_id, client_id, list_id, nonce = payload
    except SignatureExpired:
        raise LinkError("expired") from None
    except (BadData, TypeError, ValueError):
        raise LinkError("invalid") from None
    sub = db.session.get(Subscription, sub_id) if isinstance(sub_id, int) else None
    if sub is None or sub.client_id != client_id or sub.list_id != list_id:
        raise LinkError("invalid")
    if sub.status == CONFIRMED:
        return sub, True
    if sub.status != UNCONFIRMED or not secrets.compare_digest(sub.confirm_nonce, str(nonce)):
        raise LinkError("void")
    return sub, False


def confirm(sub: Subscription, evidence: Evidence, now: datetime | None = None) -> bool:
    """Confirm a pending subscription: consent "given" by double opt-in, with the time
    and truncated address of both the request and the confirmation. False when it was
    confirmed already (a double click)."""
    now = now_utc(now)
    if sub.status == CONFIRMED:
        return False
    if sub.status != UNCONFIRMED:
        raise LinkError("void")
    requested = db.session.scalar(
        select(SubscriptionEvent)
        .where(SubscriptionEvent.subscription_id == sub.id, SubscriptionEvent.status == UNCONFIRMED)
        .order_by(SubscriptionEvent.id.desc())
        .limit(1)
    )
    note = ""
    if requested is not None:
        note = f"requested {requested.occurred_at.isoformat()} from {requested.ip or '-'}"
    old = sub.status
    sub.status = CONFIRMED
    sub.confirm_nonce = ""
    sub.updated_at = now
    db.session.flush()
    consent_id = _give(
        sub.client_id, sub.mailing_list, Method.DOUBLE_OPT_IN, None, evidence, note, now
    )
    _history(sub, old, EventSource.CONFIRM, None, evidence, now, consent_event_id=consent_id)
    return True


def confirmation_email(sub: Subscription, client: Client, link: str) -> tuple[str, str]:
    """(subject, text): the list, what it is for, the link and the notice; nothing
    else (a confirmation request must not advertise)."""
    org = organisation()
    mlist = sub.mailing_list
    notice = _notice(mlist.purpose)
    with force_locale(notice.language):
        name = f"{client.first_name} {client.last_name}".strip()
        lines = [
            _("Hello %(name)s,", name=name) if name else _("Hello,"),
            "",
            _(
                "Please confirm that you want to receive “%(list)s” from %(org)s.",
                list=mlist.name,
                org=org.legal_name or org.name,
            ),
        ]
        if mlist.description:
            lines += ["", mlist.description]
        lines += [
            "",
            _("To confirm, open this link:"),
            "",
            f"    {link}",
            "",
            _(
                "The link works until %(date)s. If you did not ask for this, ignore this "
                "email: you will not be subscribed.",
                date=format_date(now_utc(None) + timedelta(days=CONFIRM_DAYS), "long"),
            ),
            "",
            notice.text,
            "",
            org.legal_name or org.name,
        ]
        subject = _("Please confirm your subscription: %(list)s", list=mlist.name)
    return subject, "\n".join(lines) + "\n"


# --- unsubscribe links -----------------------------------------------------------------


def unsubscribe_token(client_id: int, list_id: int, campaign_id: int | None = None) -> str:
    """Names one subscription (client and list) and, optionally, the campaign that
    carried the link. Never expires: an unsubscribe link must keep working."""
    payload = [int(client_id), int(list_id), int(campaign_id) if campaign_id is not None else None]
    return _serializer(UNSUBSCRIBE_SALT).dumps(payload)  # type: ignore[no-any-return]


def unsubscribe_url(client_id: int, list_id: int, campaign_id: int | None = None) -> str:
    """The absolute unsubscribe / preferences URL (on CRM_BASE_URL) for a message body
    and the List-Unsubscribe header; the RFC 8058 one-click POST goes to the same URL."""
    return public_url(
        "mailing.unsubscribe", token=unsubscribe_token(client_id, list_id, campaign_id)
    )


def unsubscribe_subscription(token: str) -> tuple[Subscription, int | None]:
    """The subscription an unsubscribe token names and its campaign id; LinkError
    ("invalid") for a tampered token or one naming no subscription."""
    if not token or len(token) > 300:
        raise LinkError("invalid")
    try:
        client_id, list_id, campaign_id = _serializer(UNSUBSCRIBE_SALT).loads(token)
    except (BadData, TypeError, ValueError):
        raise LinkError("invalid") from None
    if not isinstance(client_id, int) or not isinstance(list_id, int):
        raise LinkError("invalid")
    sub = get_subscription(client_id, list_id)
    if sub is None:
        raise LinkError("invalid")
    return sub, campaign_id if isinstance(campaign_id, int) else None


def unsubscribes_for_campaign(campaign_id: int) -> int:
    """How many subscriptions ended through links of this campaign."""
    return (
        db.session.scalar(
            select(func.count(func.distinct(SubscriptionEvent.subscription_id))).where(
                SubscriptionEvent.campaign_id == campaign_id,
                SubscriptionEvent.status == UNSUBSCRIBED,
            )
        )
        or 0
    )


# --- for sending -----------------------------------------------------------------------


def audience_client_ids(list_ids: Sequence[int]) -> Select[Any]:
    """Distinct ids of clients with a confirmed subscription to any of the lists.
    Sending still asks `blocked_client_ids` per batch at send time."""
    return (
        select(Subscription.client_id)
        .where(Subscription.list_id.in_(list(list_ids)), Subscription.status == CONFIRMED)
        .distinct()
    )


def recipient_block_reason(
    client_id: int, list_id: int | None, email: str, *, now: datetime | None = None
) -> str | None:
    """None when `email` may be mailed now for the list, else why not: "no_email",
    "suppressed", "restricted" (processing restricted, GDPR Art. 18), "list_archived"
    (the list is archived or gone), "unsubscribed" (no confirmed subscription) or
    "no_consent" (the ledger's may_contact says no for the list's purpose). Without a
    list only the address, suppression and restriction are checked."""
    now = now_utc(now)
    if not normalise_email(email):
        return NO_EMAIL
    if is_suppressed(email):
        return SUPPRESSED
    # The restriction and the subscription in one query.
    found = db.session.execute(
        select(Client.restricted_at, Subscription.status)
        .outerjoin(
            Subscription,
            and_(Subscription.client_id == Client.id, Subscription.list_id == list_id),
        )
        .where(Client.id == client_id)
    ).first()
    if found is not None and found.restricted_at is not None:
        return RESTRICTED
    if list_id is None:
        return None
    mlist = db.session.get(MailingList, list_id)
    if mlist is None or mlist.is_archived:
        return LIST_ARCHIVED
    if found is None or found.status != CONFIRMED:
        return NOT_SUBSCRIBED
    if not may_contact(client_id, mlist.purpose_id, Channel.EMAIL, now=now):
        return NO_CONSENT
    return None


def blocked_client_ids(
    client_ids: Iterable[int], list_id: int | None, *, now: datetime | None = None
) -> dict[int, str]:
    """`recipient_block_reason` for a batch, with the clients' current addresses:
    {client id: reason} for those that must not be mailed (absent: may be mailed).
    The restriction of processing is read with the clients. Two queries per batch
    (the clients with subscription and consent state, then the suppression hashes),
    whatever its size up to a few thousand."""
    now = now_utc(now)
    ids = sorted({int(i) for i in client_ids})
    if not ids:
        return {}
    mlist = db.session.get(MailingList, list_id) if list_id is not None else None
    blocked: dict[int, str] = {}
    purpose_ok = False
    if mlist is not None:
        purpose = mlist.purpose
        purpose_ok = not purpose.is_archived and Channel.EMAIL.value in (purpose.channels or [])
        stmt = (
            select(
                Client.id,
                Client.email,
                Client.restricted_at,
                Subscription.status,
                valid_condition(now).label("valid"),
                ConsentState.id.label("state_id"),
            )
            .outerjoin(
                Subscription,
                and_(Subscription.client_id == Client.id, Subscription.list_id == mlist.id),
            )
            .outerjoin(
                ConsentState,
                and_(
                    ConsentState.client_id == Client.id,
                    ConsentState.purpose_id == mlist.purpose_id,
                ),
            )
            .where(among(Client.id, ids, Integer()))
        )
    else:
        stmt = select(Client.id, Client.email, Client.restricted_at).where(
            among(Client.id, ids, Integer())
        )
    rows = db.session.execute(stmt).all()
    found = {row.id for row in rows}
    for missing in set(ids) - found:
        blocked[missing] = NO_EMAIL
    suppressed = suppressed_emails(row.email for row in rows)
    for row in rows:
        normal = normalise_email(row.email)
        if not normal:
            blocked[row.id] = NO_EMAIL
        elif normal in suppressed:
            blocked[row.id] = SUPPRESSED
        elif row.restricted_at is not None:
            blocked[row.id] = RESTRICTED
        elif list_id is None:
            continue
        elif mlist is None or mlist.is_archived:
            blocked[row.id] = LIST_ARCHIVED
        elif row.status != CONFIRMED:
            blocked[row.id] = NOT_SUBSCRIBED
        elif not (purpose_ok and row.state_id is not None and row.valid):
            blocked[row.id] = NO_CONSENT
    return blocked


# --- the client card -------------------------------------------------------------------


@dataclass
class CardRow:
    list_id: int
    list_name: str
    group_name: str
    opt_in: str
    archived: bool
    subscription_id: int | None
    status: str | None
    since: datetime | None


@dataclass
class CardSection:
    subscribed: list[CardRow]  # rows with a subscription, any status
    available: list[CardRow]  # live lists the client is not (or no longer) on


def card_section(client_id: int) -> CardSection:
    """Everything the card's list section shows, in one query: live lists and the
    lists this client has a subscription to, each with the subscription if any."""
    stmt = (
        select(
            MailingList.id,
            MailingList.name,
            MailingList.opt_in,
            MailingList.archived_at,
            ListGroup.name.label("group_name"),
            Subscription.id.label("sub_id"),
            Subscription.status,
            Subscription.updated_at,
        )
        .outerjoin(ListGroup, ListGroup.id == MailingList.group_id)
        .outerjoin(
            Subscription,
            and_(Subscription.list_id == MailingList.id, Subscription.client_id == client_id),
        )
        .where(or_(MailingList.archived_at.is_(None), Subscription.id.is_not(None)))
        .order_by(MailingList.name)
    )
    subscribed, available = [], []
    for r in db.session.execute(stmt):
        row = CardRow(
            r.id,
            r.name,
            r.group_name or "",
            r.opt_in,
            r.archived_at is not None,
            r.sub_id,
            r.status,
            r.updated_at,
        )
        if row.subscription_id is not None:
            subscribed.append(row)
        if not row.archived and row.status in (None, UNSUBSCRIBED):
            available.append(row)
    return CardSection(subscribed, available)
