"""Erasure of one client (GDPR Art. 17): everything goes except what proves the
erasure and keeps the person from being contacted again.

Removed, in one transaction: the client row and everything hanging off it (custom
field values live on the row; notes, attachments, tags, consent states, events and
renewal requests, list subscriptions and their history, campaign deliveries and stored
messages, tasks, deals, exports, and whatever a later domain attaches with
`ON DELETE CASCADE`: the rows are counted per table from the foreign keys, so a new
kind is counted without a change here). Files of attachments and exports go after
the commit, so a failed commit never leaves rows pointing at deleted files.

Kept:
- requests about the client (the register must show the request was answered): the
  row stays with `subject_ref`, the requester's name, the details and the identity
  check replaced by a marker, the outcome and extension reason with the person's
  values redacted; an open erasure request named by the erasure is closed as done;
- the audit entries, with the person's values redacted (see `_redact_audit`) under a
  grant the update trigger checks, listed in the erasure's own entry so that
  `flask audit verify` still verifies the whole chain;
- keyed hashes of the email address and phone number in the suppression list (reason
  "erased"), so that a later import or form flags the person instead of mailing them;
- an `Erasure` record: the former id, the request, who, when, counts per kind, how
  many audit entries were redacted. No name, no contact.

Services flush; the caller (view or CLI) commits and then calls
`ErasureResult.after_commit()` to remove the files.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers
from flask_babel import gettext as _
from sqlalchemy import Text, cast, delete, func, or_, select

from crm.attachments.models import Attachment
from crm.attachments.services import remove_stored_files
from crm.audit.models import AuditEntry
from crm.audit.services import REDACTING_ACTION, record, redact_entries
from crm.auth.models import User
from crm.clients.models import Client
from crm.extensions import db
from crm.fields.models import CustomField
from crm.mailing.models import SuppressionReason
from crm.mailing.services import normalise_phone, suppress, suppress_phone
from crm.org.services import organisation
from crm.privacy.models import DataRequest, Erasure, RequestKind, RequestStatus
from crm.sqltypes import utcnow

MARKER = "[erased]"

# Keys of audit details whose values say what happened, not who it was about: kept in
# the entries of the erased client (their values are still searched for the person's
# name, address and phone). Every other value in those entries is replaced.
STRUCTURAL_KEYS = frozenset(
    {
        "action",
        "basis",
        "campaign_id",
        "count",
        "currency",
        "deadline",
        "event_id",
        "field",
        "fields",
        "group",
        "kind",
        "late",
        "list",
        "list_id",
        "method",
        "notice_id",
        "notice_version",
        "purpose",
        "purpose_id",
        "request_id",
        "restricted_since",
        "source",
        "stage",
        "stage_id",
        "status",
        "target",
        "version",
    }
)

# Shorter values are not searched for in other clients' entries or in free text: they
# would hit unrelated words.
MIN_NEEDLE = 4
# The SQL prefilter: the longest run of these characters of a value, lower-cased.
_ASCII_RUN = re.compile(r"[a-z0-9@._+\-]+")


class ErasureError(ValueError):
    """Why an erasure cannot be done; the message is for the user."""


@dataclass
class ErasureResult:
    erasure: Erasure
    counts: dict[str, int]
    redacted_audit_entries: int
    storage_keys: list[str] = field(default_factory=list)
    export_files: list[str] = field(default_factory=list)

    def after_commit(self) -> None:
        """Remove the attachment and export files (call after the commit)."""
        from crm.privacy.export import remove_export_files

        remove_stored_files(self.storage_keys)
        remove_export_files(self.export_files)


# --- what the client has ------------------------------------------------------------------


def _dependent_tables() -> list[Any]:
    """Tables whose rows are deleted with the client (ON DELETE CASCADE on clients.id),
    in a stable order."""
    found = []
    for table in db.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "clients" and (fk.ondelete or "").upper() == "CASCADE":
                found.append((table, fk.parent))
                break
    return sorted(found, key=lambda pair: pair[0].name)


def erasure_counts(client: Client) -> dict[str, int]:
    """Rows per kind that erasure removes (one query), plus the custom field values on
    the card and the requests that are kept (redacted)."""
    pairs = _dependent_tables()
    columns = [
        select(func.count()).select_from(table).where(column == client.id).scalar_subquery()
        for table, column in pairs
    ]
    requests = (
        select(func.count())
        .select_from(DataRequest)
        .where(DataRequest.client_id == client.id)
        .scalar_subquery()
    )
    values = db.session.execute(select(*columns, requests)).one()
    counts = {"clients": 1, "field_values": _field_value_count(client)}
    for (table, _column), n in zip(pairs, values[:-1], strict=True):
        if n:
            counts[table.name] = int(n)
    counts["requests_kept"] = int(values[-1] or 0)
    return counts


def _field_value_count(client: Client) -> int:
    return sum(1 for value in (client.custom or {}).values() if value not in (None, "", []))


def describe_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(label, n) for people: what erasure removes, in the order of the card."""
    labels = {
        "clients": _("Client card"),
        "field_values": _("Custom field values"),
        "notes": _("Notes and activities"),
        "attachments": _("Attachments (rows and files)"),
        "client_tags": _("Tags"),
        "consent_states": _("Consents"),
        "consent_events": _("Consent history events"),
        "consent_renewals": _("Consent renewal requests"),
        "mailing_subscriptions": _("List subscriptions"),
        "mailing_subscription_events": _("Subscription history events"),
        "campaign_deliveries": _("Campaign deliveries"),
        "sent_messages": _("Stored emails"),
        "tasks": _("Tasks"),
        "deals": _("Deals"),
        "appointments": _("Appointments"),
        "privacy_exports": _("Data exports (rows and files)"),
        "anonymised_clients": _("Anonymisation marker"),
    }
    order = list(labels)
    keys = sorted(
        (k for k, n in counts.items() if n and k != "requests_kept"),
        key=lambda k: (order.index(k) if k in order else len(order), k),
    )
    # A kind without a label (a later domain's table) shows its table name.
    return [(labels.get(k, k.replace("_", " ").capitalize()), counts[k]) for k in keys]


# --- the person's values --------------------------------------------------------------------


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def phone_forms(phone: str) -> list[str]:
    """The ways a stored number may have been written: as stored, E.164, national and
    international formats, national digits."""
    forms = {phone.strip()} if phone and phone.strip() else set()
    normal = normalise_phone(phone) if phone else ""
    if normal:
        number = phonenumbers.parse(normal)
        forms.add(normal)
        forms.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
        forms.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
        forms.add(str(number.national_number))
    return sorted(f for f in forms if len(f) >= MIN_NEEDLE)


def identifying_values(client: Client) -> list[str]:
    """Values that name the person anywhere: full name (both orders), email address,
    phone number in its usual forms. Searched in every audit entry and request."""
    values = set()
    first, last = (client.first_name or "").strip(), (client.last_name or "").strip()
    if first and last:
        values.update({f"{first} {last}", f"{last} {first}", f"{last}, {first}"})
    elif first or last:
        values.add(first or last)
    elif client.company:  # a card without a person's name is known by its company
        values.add(client.company.strip())
    if client.email:
        values.add(client.email.strip())
    values.update(phone_forms(client.phone or ""))
    return sorted((v for v in values if len(v) >= MIN_NEEDLE), key=len, reverse=True)


def personal_values(client: Client) -> list[str]:
    """Everything of the card that is about the person: identifying values, name parts,
    company, street, and the values of custom fields marked as personal data.
    Searched in the client's own audit entries and requests."""
    values = set(identifying_values(client))
    for name in ("first_name", "last_name", "company", "street"):
        value = (getattr(client, name) or "").strip()
        if value:
            values.add(value)
    personal = set(db.session.scalars(select(CustomField.key).where(CustomField.personal_data)))
    for key, value in (client.custom or {}).items():
        if key not in personal:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and len(item.strip()) >= 2:
                values.add(item.strip())
    return sorted(values, key=len, reverse=True)


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    wanted = [re.escape(unicodedata.normalize("NFC", v)) for v in values if v]
    if not wanted:
        return None
    return re.compile("|".join(wanted), re.IGNORECASE)


def redact_text(text: str, pattern: re.Pattern[str] | None) -> str:
    if not text or pattern is None:
        return text
    return pattern.sub(MARKER, unicodedata.normalize("NFC", text))


def _redact_value(value: Any, pattern: re.Pattern[str] | None, whole: bool) -> Any:
    """Replace the person's values in a JSON value: keys stay (unless they hold the
    values themselves), strings lose the matches; with `whole`, every string that is
    not under a structural key becomes the marker (numbers, booleans and nulls stay:
    counts and amounts say nothing about who it was once the person is gone)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            new_key = redact_text(str(key), pattern)
            keep = key in STRUCTURAL_KEYS or key == "changes"
            out[new_key] = _redact_value(item, pattern, whole and not keep)
            if key == "changes" and isinstance(item, dict):
                # A diff of the client: every old and new value is theirs.
                out[new_key] = {
                    redact_text(str(k), pattern): _redact_value(v, pattern, True)
                    for k, v in item.items()
                }
        return out
    if isinstance(value, list):
        return [_redact_value(item, pattern, whole) for item in value]
    if isinstance(value, str):
        if whole and value:
            return MARKER
        return redact_text(value, pattern)
    return value


# --- audit -----------------------------------------------------------------------------------


def _prefilters(values: Iterable[str]) -> tuple[list[str], bool]:
    """LIKE patterns (lower case) that every entry holding one of `values` matches, in
    any letter case and JSON escaping: the longest run of plain ASCII characters of
    each value. False when some value has no run long enough: then every entry must
    be read."""
    runs = []
    for value in values:
        found = _ASCII_RUN.findall(_fold(value))
        longest = max(found, key=len, default="")
        if len(longest) < 3:
            return [], False
        escaped = longest.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        runs.append(f"%{escaped}%")
    return sorted(set(runs)), True


def _redact_audit(client: Client, batch: int = 500) -> dict[str, str]:
    """Redact the person from the audit log: in the client's own entries every value
    that is not structural, in all other entries (imports, test sends, user actions,
    other clients) the identifying values wherever they occur. The client's own
    entries made by the person on a public page (no actor) also lose their IP.
    Returns {entry id: fingerprint} for the erasure's entry."""
    everywhere = identifying_values(client)
    own_pattern = _pattern(personal_values(client))
    other_pattern = _pattern(everywhere)
    changes: dict[int, tuple[dict[str, Any], str | None]] = {}

    def consider(entry: AuditEntry, own: bool) -> None:
        details = entry.details or {}
        if own:
            new = _redact_value(details, own_pattern, True)
            ip = None if entry.actor_id is None else entry.ip
        else:
            new = _redact_value(details, other_pattern, False)
            ip = entry.ip
        if new != details or ip != entry.ip:
            changes[entry.id] = (new, ip)

    own_stmt = select(AuditEntry).where(AuditEntry.client_id == client.id).order_by(AuditEntry.id)
    for entry in db.session.scalars(own_stmt.execution_options(yield_per=batch)):
        consider(entry, True)

    if other_pattern is not None:
        patterns, usable = _prefilters(everywhere)
        others = select(AuditEntry).where(
            or_(AuditEntry.client_id.is_(None), AuditEntry.client_id != client.id)
        )
        if usable:
            text = func.lower(cast(AuditEntry.details, Text))
            others = others.where(or_(*(text.like(p, escape="\\") for p in patterns)))
        stmt = others.order_by(AuditEntry.id).execution_options(yield_per=batch)
        for entry in db.session.scalars(stmt):
            consider(entry, False)
    return redact_entries(changes)


# --- requests --------------------------------------------------------------------------------


def _redact_requests(client: Client) -> int:
    """Requests about the client keep their row and `subject_ref`, lose the requester's
    name, what was asked and how identity was checked; other requests that name the
    person lose those values. Returns how many requests about the client were kept."""
    pattern = _pattern(personal_values(client))
    about = db.session.scalars(select(DataRequest).where(DataRequest.client_id == client.id)).all()
    for data_request in about:
        data_request.subject_ref = client.id
        data_request.requester = MARKER
        if data_request.details:
            data_request.details = MARKER
        if data_request.identity_check:
            data_request.identity_check = MARKER
        data_request.outcome = redact_text(data_request.outcome, pattern)
        data_request.extension_reason = redact_text(data_request.extension_reason, pattern)
    everywhere = _pattern(identifying_values(client))
    if everywhere is not None:
        others = db.session.scalars(
            select(DataRequest).where(
                or_(DataRequest.client_id.is_(None), DataRequest.client_id != client.id)
            )
        )
        for data_request in others:
            for name in ("requester", "details", "identity_check", "outcome", "extension_reason"):
                value = getattr(data_request, name) or ""
                redacted = redact_text(value, everywhere)
                if redacted != value:
                    setattr(data_request, name, redacted)
    db.session.flush()
    return len(about)


def check_request(client: Client, request_id: int | None) -> DataRequest | None:
    """The erasure request the erasure answers, if any; ErasureError when it cannot."""
    if request_id is None:
        return None
    data_request = db.session.get(DataRequest, request_id)
    if data_request is None or data_request.client_id != client.id:
        raise ErasureError(_("This request is not about this client."))
    if data_request.kind != RequestKind.ERASURE.value:
        raise ErasureError(_("Only an erasure request can be answered by erasing."))
    if not data_request.is_open:
        raise ErasureError(_("This request is closed already."))
    if not data_request.identity_check:
        raise ErasureError(
            _("Record how the requester's identity was checked (edit the request) before erasing.")
        )
    return data_request


def confirmation_matches(client: Client, typed: str) -> bool:
    """The confirmation: the client's name as shown, ignoring case and spaces around."""
    wanted = " ".join(_fold(client.display_name).split())
    given = " ".join(_fold(typed or "").split())
    return bool(given) and given == wanted


# --- erasure ---------------------------------------------------------------------------------


def erase_client(
    client: Client, by: User | None, *, request_id: int | None = None
) -> ErasureResult:
    """Erase `client` (see the module's docstring). Flushes; the caller commits and then
    calls `after_commit()` on the result."""
    from crm.privacy.export import export_file_names

    data_request = check_request(client, request_id)
    client_id = client.id
    counts = erasure_counts(client)
    requests_kept = counts.pop("requests_kept")
    storage_keys = list(
        db.session.scalars(select(Attachment.storage_key).where(Attachment.client_id == client_id))
    )
    # The person's values are read from the row before it goes.
    _redact_requests(client)
    if client.email:
        suppress(client.email, SuppressionReason.ERASED)
    if client.phone:
        suppress_phone(client.phone, SuppressionReason.ERASED, organisation().default_phone_region)
    redacted = _redact_audit(client)
    export_files = export_file_names(client_id)
    db.session.execute(
        delete(Client).where(Client.id == client_id),
        execution_options={"synchronize_session": False},
    )
    db.session.expunge(client)
    now = utcnow()
    erasure = Erasure(
        subject_ref=client_id,
        request_id=data_request.id if data_request else None,
        erased_by_id=by.id if by else None,
        erased_at=now,
        counts=counts,
        redacted_audit_entries=len(redacted),
    )
    db.session.add(erasure)
    db.session.flush()
    if data_request is not None:
        _close_request(data_request, erasure, by, now)
    record(
        REDACTING_ACTION,
        target_type="erasure",
        target_id=erasure.id,
        client_id=client_id,
        details={
            "subject_ref": client_id,
            "request_id": erasure.request_id,
            "counts": counts,
            "requests_kept": requests_kept,
            "redacted_entries": redacted,
        },
        actor=by,
    )
    return ErasureResult(erasure, counts, len(redacted), storage_keys, export_files)


def _close_request(
    data_request: DataRequest, erasure: Erasure, by: User | None, now: datetime
) -> None:
    """The erasure answers the request: closed as done (its deadline tasks completed),
    with an outcome that names no one."""
    from crm.privacy.services import close_request

    removed = sum(n for key, n in erasure.counts.items() if key != "field_values")
    outcome = _(
        "Erased on %(date)s (erasure record %(id)s): %(rows)s records removed, audit "
        "entries redacted, email address and phone number kept only as keyed hashes on "
        "the suppression list.",
        date=now.date().isoformat(),
        id=erasure.id,
        rows=removed,
    )
    close_request(
        data_request,
        status=RequestStatus.DONE.value,
        outcome=outcome,
        by=by,  # type: ignore[arg-type]  # the CLI erases without a signed-in user
        now=now,
    )
