"""Export of one client's data (GDPR Art. 15 access, Art. 20 portability).

The export is one zip file:

    <folder>/data.xlsx          one sheet per kind of data, plus the Art. 15 information
    <folder>/data.json          the same data, machine-readable (export_schema.json)
    <folder>/emails/*.eml       every message sent to the client, byte for byte
    <folder>/attachments/*      the files on the client's card
    <folder>/README.txt         what the files are

It is written as a stream so that a client with 10 000 emails costs no more memory
than one with ten: rows are read in keyset batches of column tuples (no ORM objects
pile up in the session), the workbook is openpyxl's write-only kind (each sheet
streams to a temporary file), the JSON copy is written row by row, and each message
and file goes into the zip as soon as it is read. The zip is written under a temporary
name in the target's folder and renamed when complete, so a half-written export is
never mistaken for a finished one.

Times: the workbook shows the organisation's local wall time (spreadsheets have no
time zones; the information sheet names the zone); the JSON copy has UTC instants in
ISO 8601.

The same writer serves the worker (`run_export`, a `DataExport` row advancing through
pending -> running -> done/failed, progress committed as it goes) and the command line
(`write_client_zip`, synchronous, no row).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from openpyxl import Workbook
from sqlalchemy import Select, func, select, tuple_, update

from crm.appointments.models import Appointment, Service
from crm.appointments.services import status_labels as appointment_status_labels
from crm.attachments.models import Attachment
from crm.attachments.services import storage_path
from crm.auth.models import User
from crm.campaigns.models import Campaign, SentMessage
from crm.clients.models import Client
from crm.consents.forms import display_labels
from crm.consents.models import (
    ConsentEvent,
    ConsentNotice,
    ConsentPurpose,
    ConsentState,
    LegalBasis,
)
from crm.deals.models import Deal, DealStage
from crm.extensions import db
from crm.fields.models import CustomField
from crm.mailing.models import MailingList, Subscription, SubscriptionEvent
from crm.notes.models import Note
from crm.org.models import Organisation
from crm.org.services import organisation
from crm.privacy.models import DataExport, ExportStatus
from crm.sqltypes import utcnow
from crm.tasks.models import Task
from crm.web.xlsx import MAX_SHEET_TITLE
from crm.web.xlsx import cell as xlsx_cell

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("export_schema.json")
FORMAT = "crm.client-export"
FORMAT_VERSION = 1
ZIP_MIMETYPE = "application/zip"
# Rows read per query for the long kinds (emails, notes).
BATCH = 500
# Items between two progress reports within one kind.
PROGRESS_EVERY = 500
# A running export whose heartbeat is older than this was left by a dead worker.
STALE_AFTER = timedelta(minutes=10)
# A pending export older than this has lost its message: nudge it again.
NUDGE_AFTER = timedelta(minutes=2)
# An export not finished this long after it was asked for is given up.
GIVE_UP_AFTER = timedelta(hours=2)
# Temporary files of exports interrupted mid-write are removed after this.
PART_MAX_AGE = timedelta(days=1)
PART_SUFFIX = ".part"
# Already-compressed file types go into the zip as they are (deflating them again
# costs time and gains nothing).
STORED_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "application/zip")
STORED_TYPES_PREFIX = ("video/", "audio/")
STORED_EXTENSIONS = (".pdf", ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".zip", ".gz")

# Progress units besides one per email and note: the ten small kinds of data and the
# workbook's save.
SMALL_STEPS = 12

Progress = Callable[[int, str], None]


class ExportError(Exception):
    """Why an export cannot be started, for a person."""


# --- where files live ------------------------------------------------------------------


def export_root() -> Path:
    """The folder of finished exports (CRM_EXPORT_DIR, default instance/exports)."""
    root = Path(current_app.config["CRM_EXPORT_DIR"])
    root.mkdir(parents=True, exist_ok=True)
    return root


def export_path(export: DataExport) -> Path | None:
    """The file of a finished export, or None when it has none (any more)."""
    if not export.file_name:
        return None
    path = export_root() / export.file_name
    return path if path.is_file() else None


def download_days() -> int:
    return int(current_app.config.get("CRM_EXPORT_DAYS", 7))


# --- names -----------------------------------------------------------------------------

# Characters no common file system accepts in a name, and control characters.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')
_SPACES = re.compile(r"\s+")


def safe_name(text: str, fallback: str, limit: int = 80) -> str:
    """A file name made of `text`, diacritics kept (NFC, so Łódź stays four letters),
    separators and control characters replaced, at most `limit` characters."""
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFC", text or ""))
    cleaned = _SPACES.sub(" ", cleaned).strip(" ._")
    return cleaned[:limit].rstrip(" ._") or fallback


class _Names:
    """Unique names within one folder of the zip: a repeat gets " (2)", " (3)"..."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, stem: str, suffix: str = "") -> str:
        name, n = f"{stem}{suffix}", 1
        while name.casefold() in self.used:
            n += 1
            name = f"{stem} ({n}){suffix}"
        self.used.add(name.casefold())
        return name


def export_folder_name(client: Client) -> str:
    """The zip's top folder and the download's name, e.g. "Export 42 Łucja Dvořák"."""
    return safe_name(f"{_('Export')} {client.id} {client.display_name}", f"export-{client.id}")


def download_name(client: Client, finished: datetime | None) -> str:
    stamp = (finished or utcnow()).astimezone(_zone()).strftime("%Y-%m-%d")
    return f"{export_folder_name(client)} {stamp}.zip"


# --- values ----------------------------------------------------------------------------


def _zone() -> ZoneInfo:
    try:
        return ZoneInfo(organisation().timezone)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(value: Any) -> str:
    # ensure_ascii=False: the file is UTF-8 and readable as such (Łódź, not \u0141...).
    return json.dumps(value, default=_json_default, ensure_ascii=False)


@dataclass(frozen=True)
class Col:
    """One column: the JSON key of the row, the sheet's heading, and optionally how the
    value reads in the sheet (a label for a code)."""

    key: str
    label: str
    show: Callable[[Any], Any] | None = None


# --- the writer ------------------------------------------------------------------------


@dataclass
class _Writer:
    """Writes the workbook, the JSON copy and the zip's other entries side by side."""

    archive: zipfile.ZipFile
    folder: str
    workbook: Workbook
    json_file: IO[str]
    zone: ZoneInfo
    yes: str
    no: str
    first_key: bool = True
    counts: dict[str, int] = field(default_factory=dict)

    def sheet_value(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            return self.yes if value else self.no
        if isinstance(value, datetime):
            return value.astimezone(self.zone).replace(tzinfo=None, microsecond=0)
        if isinstance(value, list | tuple):
            return ", ".join(str(self.sheet_value(v)) for v in value)
        if isinstance(value, dict):
            return _dumps(value)
        return value

    def _key(self, key: str) -> None:
        self.json_file.write(("\n" if self.first_key else ",\n") + _dumps(key) + ": ")
        self.first_key = False

    def value(self, key: str, value: Any) -> None:
        """A top-level JSON member that has no sheet (format, version, ...)."""
        self._key(key)
        self.json_file.write(_dumps(value))

    def record(self, key: str, title: str, pairs: list[tuple[Col, Any]]) -> None:
        """One object: a two-column sheet (what, value) and a JSON object."""
        sheet = self.workbook.create_sheet(title=title[:MAX_SHEET_TITLE])
        sheet.append(
            [xlsx_cell(sheet, _("Field"), bold=True), xlsx_cell(sheet, _("Value"), bold=True)]
        )
        for col, value in pairs:
            shown = col.show(value) if col.show and value is not None else value
            sheet.append([xlsx_cell(sheet, col.label), xlsx_cell(sheet, self.sheet_value(shown))])
        self._key(key)
        self.json_file.write(_dumps({col.key: value for col, value in pairs}))

    def table(
        self, key: str, title: str, columns: list[Col], rows: Iterable[dict[str, Any]]
    ) -> int:
        """A list of rows: a sheet with a heading row, and a JSON array."""
        sheet = self.workbook.create_sheet(title=title[:MAX_SHEET_TITLE])
        sheet.append([xlsx_cell(sheet, c.label, bold=True) for c in columns])
        self._key(key)
        self.json_file.write("[")
        count = 0
        for row in rows:
            cells = []
            for c in columns:
                raw = row.get(c.key)
                shown = c.show(raw) if c.show and raw is not None else raw
                cells.append(xlsx_cell(sheet, self.sheet_value(shown)))
            sheet.append(cells)
            self.json_file.write(("\n" if count == 0 else ",\n") + _dumps(row))
            count += 1
        self.json_file.write("]")
        if count == 0:
            sheet.append([xlsx_cell(sheet, _("Nothing recorded."))])
        self.counts[key] = count
        return count

    def add_bytes(self, name: str, data: bytes) -> None:
        self.archive.writestr(f"{self.folder}/{name}", data, compress_type=zipfile.ZIP_DEFLATED)

    def add_file(self, name: str, path: Path, *, deflate: bool) -> None:
        kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        self.archive.write(path, f"{self.folder}/{name}", compress_type=kind)


class _Steps:
    """Progress over the whole export: every small kind counts one unit, each email
    and note one unit, so the bar moves evenly however the data is spread."""

    def __init__(self, report: Progress | None, total_units: int) -> None:
        self.report = report
        self.total = max(1, total_units)
        self.done = 0
        self.last = -1

    def advance(self, units: int, step: str) -> None:
        self.done += units
        if self.report is None:
            return
        # 99 at most until the file is complete and renamed.
        percent = min(99, int(self.done * 100 / self.total))
        if percent != self.last:
            self.last = percent
            self.report(percent, step)


# --- reading ---------------------------------------------------------------------------


class _Users:
    """Staff names by id, looked up once each."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def __call__(self, user_id: int | None) -> str | None:
        if user_id is None:
            return None
        if user_id not in self.names:
            row = db.session.execute(
                select(User.full_name, User.email).where(User.id == user_id)
            ).first()
            self.names[user_id] = (row.full_name or row.email) if row else f"#{user_id}"
        return self.names[user_id]


def _keyset(stmt: Select[Any], order: tuple[Any, Any], batch: int = BATCH) -> Iterator[list[Any]]:
    """Batches of rows of `stmt` in (order[0], order[1]) order, each a fresh query
    after the last row of the one before: memory stays flat, and a commit between
    batches (progress) closes no open cursor."""
    first, second = order
    after: tuple[Any, Any] | None = None
    while True:
        query = stmt.order_by(first, second).limit(batch)
        if after is not None:
            # A plain tuple on the right: its values are bound with the columns' types.
            query = query.where(tuple_(first, second) > after)
        rows = db.session.execute(query).all()
        if not rows:
            return
        yield rows
        last = rows[-1]
        after = (getattr(last, first.key), getattr(last, second.key))
        if len(rows) < batch:
            return


def _labels() -> dict[str, dict[str, str]]:
    return display_labels()


def _lookup(table: dict[str, str]) -> Callable[[Any], Any]:
    return lambda code: table.get(code, code)


def _client_pairs(client: Client, users: _Users) -> list[tuple[Col, Any]]:
    return [
        (Col("id", _("Client number")), client.id),
        (Col("first_name", _("First name")), client.first_name),
        (Col("last_name", _("Last name")), client.last_name),
        (Col("company", _("Company")), client.company),
        (Col("email", _("Email")), client.email),
        (Col("phone", _("Phone")), client.phone),
        (Col("street", _("Street")), client.street),
        (Col("postal_code", _("Postal code")), client.postal_code),
        (Col("city", _("City")), client.city),
        (Col("country", _("Country")), client.country),
        (Col("owner", _("Owner")), users(client.owner_id)),
        (Col("tags", _("Tags")), [t.name for t in client.tags]),
        (Col("created_at", _("Created")), client.created_at),
        (Col("updated_at", _("Updated")), client.updated_at),
        (Col("restricted_at", _("Processing restricted since")), client.restricted_at),
        (Col("restriction_reason", _("Reason for the restriction")), client.restriction_reason),
    ]


def _custom_rows(client: Client) -> Iterator[dict[str, Any]]:
    fields = db.session.scalars(select(CustomField).order_by(CustomField.position, CustomField.id))
    values = client.custom or {}
    for f in fields:
        value = values.get(f.key)
        if value is None or value == "" or value == []:
            continue
        yield {
            "key": f.key,
            "label": f.label,
            "type": f.field_type,
            "value": value,
            "personal_data": bool(f.personal_data),
            "archived": f.archived_at is not None,
        }


def _consent_rows(client_id: int) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            ConsentPurpose.key,
            ConsentPurpose.name,
            ConsentPurpose.legal_basis,
            ConsentState.status,
            ConsentState.since,
            ConsentState.expires_at,
            ConsentState.ended_at,
            ConsentNotice.version,
            ConsentNotice.language,
        )
        .join(ConsentPurpose, ConsentPurpose.id == ConsentState.purpose_id)
        .outerjoin(ConsentNotice, ConsentNotice.id == ConsentState.notice_id)
        .where(ConsentState.client_id == client_id)
        .order_by(ConsentPurpose.name, ConsentPurpose.id)
    )
    for r in db.session.execute(stmt):
        yield {
            "purpose_key": r.key,
            "purpose": r.name,
            "legal_basis": r.legal_basis,
            "status": r.status,
            "since": r.since,
            "expires_at": r.expires_at,
            "ended_at": r.ended_at,
            "notice_version": r.version,
            "notice_language": r.language,
        }


def _consent_event_rows(client_id: int, users: _Users) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            ConsentEvent.id,
            ConsentEvent.occurred_at,
            ConsentEvent.recorded_at,
            ConsentEvent.kind,
            ConsentEvent.method,
            ConsentEvent.actor_id,
            ConsentEvent.expires_at,
            ConsentEvent.source_url,
            ConsentEvent.user_agent,
            ConsentEvent.ip,
            ConsentEvent.note,
            ConsentPurpose.key.label("purpose_key"),
            ConsentPurpose.name.label("purpose"),
            ConsentNotice.version,
            ConsentNotice.language,
            ConsentNotice.content_hash,
        )
        .join(ConsentPurpose, ConsentPurpose.id == ConsentEvent.purpose_id)
        .outerjoin(ConsentNotice, ConsentNotice.id == ConsentEvent.notice_id)
        .where(ConsentEvent.client_id == client_id)
        .order_by(ConsentEvent.id)
    )
    for r in db.session.execute(stmt):
        yield {
            "id": r.id,
            "occurred_at": r.occurred_at,
            "recorded_at": r.recorded_at,
            "purpose_key": r.purpose_key,
            "purpose": r.purpose,
            "kind": r.kind,
            "method": r.method,
            "notice_version": r.version,
            "notice_language": r.language,
            "notice_hash": r.content_hash,
            "expires_at": r.expires_at,
            "source_url": r.source_url,
            "user_agent": r.user_agent,
            "ip": r.ip,
            "recorded_by": users(r.actor_id),
            "note": r.note,
        }


def _notice_rows(client_id: int) -> Iterator[dict[str, Any]]:
    """Every notice version the client's events and states name, in full."""
    used = (
        select(ConsentEvent.notice_id)
        .where(ConsentEvent.client_id == client_id, ConsentEvent.notice_id.is_not(None))
        .union(
            select(ConsentState.notice_id).where(
                ConsentState.client_id == client_id, ConsentState.notice_id.is_not(None)
            )
        )
    )
    stmt = (
        select(
            ConsentNotice.version,
            ConsentNotice.language,
            ConsentNotice.content_hash,
            ConsentNotice.created_at,
            ConsentNotice.text,
            ConsentPurpose.key,
            ConsentPurpose.name,
        )
        .join(ConsentPurpose, ConsentPurpose.id == ConsentNotice.purpose_id)
        .where(ConsentNotice.id.in_(used))
        .order_by(ConsentPurpose.name, ConsentNotice.language, ConsentNotice.version)
    )
    for r in db.session.execute(stmt):
        yield {
            "purpose_key": r.key,
            "purpose": r.name,
            "language": r.language,
            "version": r.version,
            "hash": r.content_hash,
            "created_at": r.created_at,
            "text": r.text,
        }


def _membership_rows(client_id: int) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            Subscription.status, Subscription.created_at, Subscription.updated_at, MailingList.name
        )
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.client_id == client_id)
        .order_by(MailingList.name, Subscription.id)
    )
    for r in db.session.execute(stmt):
        yield {
            "list": r.name,
            "status": r.status,
            "since": r.created_at,
            "updated_at": r.updated_at,
        }


def _subscription_event_rows(client_id: int, users: _Users) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            SubscriptionEvent.occurred_at,
            SubscriptionEvent.old_status,
            SubscriptionEvent.status,
            SubscriptionEvent.source,
            SubscriptionEvent.ip,
            SubscriptionEvent.user_agent,
            SubscriptionEvent.actor_id,
            MailingList.name.label("list"),
            Campaign.name.label("campaign"),
        )
        .join(MailingList, MailingList.id == SubscriptionEvent.list_id)
        .outerjoin(Campaign, Campaign.id == SubscriptionEvent.campaign_id)
        .where(SubscriptionEvent.client_id == client_id)
        .order_by(SubscriptionEvent.id)
    )
    for r in db.session.execute(stmt):
        yield {
            "occurred_at": r.occurred_at,
            "list": r.list,
            "old_status": r.old_status,
            "status": r.status,
            "source": r.source,
            "campaign": r.campaign,
            "ip": r.ip,
            "user_agent": r.user_agent,
            "changed_by": users(r.actor_id),
        }


def _email_rows(
    client_id: int, writer: _Writer, steps: _Steps, zone: ZoneInfo
) -> Iterator[dict[str, Any]]:
    """Each message: a row, and its exact bytes as an .eml file in the zip."""
    names = _Names()
    stmt = (
        select(
            SentMessage.id,
            SentMessage.sent_at,
            SentMessage.email,
            SentMessage.subject,
            SentMessage.message_id,
            SentMessage.raw,
            Campaign.name.label("campaign"),
        )
        .outerjoin(Campaign, Campaign.id == SentMessage.campaign_id)
        .where(SentMessage.client_id == client_id)
    )
    label, untitled = _("Emails"), _("message")
    since_report = 0
    for rows in _keyset(stmt, (SentMessage.sent_at, SentMessage.id)):
        for r in rows:
            stamp = r.sent_at.astimezone(zone).strftime("%Y-%m-%d %H%M")
            stem = f"{stamp} {safe_name(r.subject, untitled, 60)}"
            name = "emails/" + names.take(stem, ".eml")
            writer.add_bytes(name, zlib.decompress(r.raw))
            yield {
                "sent_at": r.sent_at,
                "to": r.email,
                "subject": r.subject,
                "message_id": r.message_id,
                "campaign": r.campaign,
                "file": name,
            }
        since_report += len(rows)
        if since_report >= PROGRESS_EVERY:
            steps.advance(since_report, label)
            since_report = 0
    steps.advance(since_report, label)


def _note_rows(client_id: int, users: _Users, steps: _Steps) -> Iterator[dict[str, Any]]:
    stmt = select(
        Note.id, Note.occurred_at, Note.created_at, Note.kind, Note.body, Note.author_id
    ).where(Note.client_id == client_id)
    label = _("Notes and activities")
    since_report = 0
    for rows in _keyset(stmt, (Note.occurred_at, Note.id)):
        for r in rows:
            yield {
                "occurred_at": r.occurred_at,
                "kind": r.kind,
                "body": r.body,
                "author": users(r.author_id),
                "created_at": r.created_at,
            }
        since_report += len(rows)
        if since_report >= PROGRESS_EVERY:
            steps.advance(since_report, label)
            since_report = 0
    steps.advance(since_report, label)


def _task_rows(client_id: int, users: _Users) -> Iterator[dict[str, Any]]:
    stmt = select(Task).where(Task.client_id == client_id).order_by(Task.created_at, Task.id)
    for t in db.session.scalars(stmt):
        yield {
            "title": t.title,
            "details": t.details or "",
            "status": t.status,
            "due_date": t.due_date,
            "assignee": users(t.assignee_id),
            "created_at": t.created_at,
            "completed_at": t.completed_at,
        }


def _deal_rows(client_id: int, users: _Users) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            Deal.title,
            Deal.amount,
            Deal.currency,
            Deal.expected_close,
            Deal.owner_id,
            Deal.created_at,
            Deal.updated_at,
            DealStage.name.label("stage"),
        )
        .join(DealStage, DealStage.id == Deal.stage_id)
        .where(Deal.client_id == client_id)
        .order_by(Deal.created_at, Deal.id)
    )
    for r in db.session.execute(stmt):
        yield {
            "title": r.title,
            "stage": r.stage,
            "amount": r.amount,
            "currency": r.currency,
            "expected_close": r.expected_close,
            "owner": users(r.owner_id),
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }


def _appointment_rows(client_id: int, users: _Users) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            Appointment.starts_at,
            Appointment.ends_at,
            Appointment.status,
            Appointment.source,
            Appointment.notes,
            Appointment.staff_id,
            Appointment.created_at,
            Appointment.cancelled_at,
            Service.name.label("service"),
            Service.location,
        )
        .join(Service, Service.id == Appointment.service_id)
        .where(Appointment.client_id == client_id)
        .order_by(Appointment.starts_at, Appointment.id)
    )
    statuses = appointment_status_labels()
    for r in db.session.execute(stmt):
        yield {
            "service": r.service,
            "starts_at": r.starts_at,
            "ends_at": r.ends_at,
            "status": r.status,
            "status_label": statuses.get(r.status, r.status),
            "source": r.source,
            "location": r.location,
            "staff": users(r.staff_id),
            "notes": r.notes,
            "created_at": r.created_at,
            "cancelled_at": r.cancelled_at,
        }


def _deflate(content_type: str, filename: str) -> bool:
    kind = (content_type or "").lower()
    if kind in STORED_TYPES or kind.startswith(STORED_TYPES_PREFIX):
        return False
    return not filename.lower().endswith(STORED_EXTENSIONS)


def _attachment_rows(client_id: int, writer: _Writer, users: _Users) -> Iterator[dict[str, Any]]:
    names = _Names()
    stmt = select(Attachment).where(Attachment.client_id == client_id).order_by(Attachment.id)
    for a in db.session.scalars(stmt):
        path = storage_path(a.storage_key)
        stem, dot, ext = a.filename.rpartition(".")
        if not dot:
            stem, ext = ext, ""
        name: str | None = "attachments/" + names.take(
            safe_name(stem, _("file"), 100), f".{safe_name(ext, 'bin', 16)}" if ext else ""
        )
        if path.is_file():
            writer.add_file(name or "", path, deflate=_deflate(a.content_type, a.filename))
        else:
            # Listed all the same: the client learns the file was held.
            log.warning("export of client %s: attachment %s has no file", client_id, a.id)
            name = None
        yield {
            "filename": a.filename,
            "content_type": a.content_type,
            "size": a.size_bytes,
            "sha256": a.sha256,
            "uploaded_at": a.created_at,
            "uploaded_by": users(a.uploaded_by_id),
            "file": name,
        }


# --- Art. 15 information ---------------------------------------------------------------


def _purposes(client_id: int) -> list[dict[str, Any]]:
    """The purposes this client's data is processed for: those with a recorded event or
    state for the client, and every active purpose whose basis is not consent (a
    contract, a legal obligation or a legitimate interest needs no per-client record)."""
    recorded = dict(
        db.session.execute(
            select(ConsentState.purpose_id, ConsentState.status).where(
                ConsentState.client_id == client_id
            )
        ).all()
    )
    with_events = set(
        db.session.scalars(
            select(ConsentEvent.purpose_id).where(ConsentEvent.client_id == client_id).distinct()
        )
    )
    out = []
    for p in db.session.scalars(select(ConsentPurpose).order_by(ConsentPurpose.name)):
        mine = p.id in recorded or p.id in with_events
        general = p.legal_basis != LegalBasis.CONSENT.value and p.archived_at is None
        if not (mine or general):
            continue
        out.append(
            {
                "key": p.key,
                "name": p.name,
                "description": p.description,
                "legal_basis": p.legal_basis,
                "legitimate_interest": p.legitimate_interest,
                "data_categories": p.data_categories,
                "recipients": p.recipients,
                "retention_months": p.retention_months,
                "retention_action": p.retention_action,
                "your_status": recorded.get(p.id),
            }
        )
    return out


def _source(client: Client) -> str:
    """Where the data came from (Art. 15(1)(g)), from what the records show: the first
    consent event's method, else the first subscription change's source."""
    labels = _labels()["method"]
    method = db.session.scalar(
        select(ConsentEvent.method)
        .where(ConsentEvent.client_id == client.id)
        .order_by(ConsentEvent.occurred_at, ConsentEvent.id)
        .limit(1)
    )
    if method is None:
        source = db.session.scalar(
            select(SubscriptionEvent.source)
            .where(SubscriptionEvent.client_id == client.id)
            .order_by(SubscriptionEvent.id)
            .limit(1)
        )
        method = {"import": "import", "confirm": "double_opt_in", "page": "web_form"}.get(
            source or "", "staff" if source else None
        )
    if method == "web_form":
        return _("Given by you through a web form.")
    if method == "double_opt_in":
        return _("Given by you through a web form and confirmed by email (double opt-in).")
    if method == "import":
        return _("Imported from a list kept by the business (a file import).")
    if method in ("phone", "in_person", "email"):
        return _(
            "Given by you (%(how)s) and recorded by staff on your client record.",
            how=labels.get(method, method).lower(),
        )
    return _("Recorded by staff on your client record.")


def _rights() -> list[str]:
    return [
        _("Access to your data and a copy of it (GDPR Art. 15): this export."),
        _("Rectification of inaccurate or incomplete data (Art. 16)."),
        _("Erasure of your data (Art. 17), unless the law requires us to keep it."),
        _("Restriction of processing (Art. 18)."),
        _("Data portability (Art. 20): data.json in this export is machine-readable."),
        _(
            "Objection to processing based on a legitimate interest, and to direct "
            "marketing (Art. 21)."
        ),
        _(
            "Withdrawal of a consent at any time, without affecting what was done "
            "before (Art. 7(3))."
        ),
        _("A complaint to a data protection supervisory authority (Art. 77)."),
    ]


def _information(client: Client, org: Organisation, zone: ZoneInfo) -> dict[str, Any]:
    recipients = [line.strip() for line in (org.recipients or "").splitlines() if line.strip()]
    return {
        "controller": {
            "name": org.name,
            "legal_name": org.legal_name or "",
            "address": org.address or "",
            "privacy_contact": org.privacy_contact or "",
        },
        "purposes": _purposes(client.id),
        "recipients": recipients,
        "source": _source(client),
        "first_recorded_at": client.created_at,
        "automated_decisions": _(
            "No decision about you is made by automated means alone, and no profiling is "
            "done with this data (Art. 22)."
        ),
        "rights": _rights(),
        "time_zone": str(zone),
    }


def _write_information(writer: _Writer, info: dict[str, Any]) -> None:
    """The Art. 15 sheet: readable text blocks, the purposes as a table."""
    labels = _labels()
    sheet = writer.workbook.create_sheet(title=_("Information")[:MAX_SHEET_TITLE])

    def line(*values: Any, bold: bool = False) -> None:
        sheet.append(
            [xlsx_cell(sheet, writer.sheet_value(v), bold=bold, wrap=True) for v in values]
        )

    controller = info["controller"]
    line(_("Information about the processing of your data (GDPR Art. 15)"), bold=True)
    line(_("Controller"), controller["legal_name"] or controller["name"])
    line(_("Address"), controller["address"])
    line(_("Privacy contact"), controller["privacy_contact"])
    line(_("Times in this workbook"), _("Local time, %(zone)s", zone=info["time_zone"]))
    line()
    line(_("Purposes and legal bases"), bold=True)
    line(
        _("Purpose"),
        _("What it is for"),
        _("Legal basis"),
        _("Legitimate interest"),
        _("Data used"),
        _("Recipients"),
        _("Kept for"),
        _("Your status"),
        bold=True,
    )
    for p in info["purposes"]:
        line(
            p["name"],
            p["description"],
            labels["basis"].get(p["legal_basis"], p["legal_basis"]),
            p["legitimate_interest"],
            p["data_categories"],
            p["recipients"],
            _(
                "%(months)s months after the purpose ends, then: %(action)s",
                months=p["retention_months"],
                action=labels["action"].get(p["retention_action"], p["retention_action"]),
            ),
            labels["status"].get(p["your_status"], p["your_status"] or ""),
        )
    if not info["purposes"]:
        line(_("Nothing recorded."))
    line()
    line(_("Recipients and processors"), bold=True)
    for recipient in info["recipients"] or [_("None named by the business.")]:
        line(recipient)
    line()
    line(_("Where the data came from"), info["source"])
    line(_("First recorded"), info["first_recorded_at"])
    line(_("Automated decisions"), info["automated_decisions"])
    line()
    line(_("Your rights"), bold=True)
    for right in info["rights"]:
        line(right)
    writer._key("information")
    writer.json_file.write(_dumps(info))


def _readme(client: Client, org: Organisation, now: datetime, zone: ZoneInfo) -> str:
    lines = [
        _("Your data held by %(org)s", org=org.legal_name or org.name),
        _(
            "Exported on %(when)s (%(zone)s).",
            when=now.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            zone=zone,
        ),
        "",
        _(
            "data.xlsx: everything recorded about you, one sheet per kind, and the information "
            "about how it is processed (sheet \u201cInformation\u201d)."
        ),
        _("data.json: the same data in a machine-readable form (JSON, UTF-8)."),
        _("emails/: every email sent to you, as sent; opens in any mail program."),
        _("attachments/: the files kept with your record."),
    ]
    return "\r\n".join(lines) + "\r\n"


# --- the whole export ------------------------------------------------------------------


@dataclass
class ExportResult:
    size: int
    counts: dict[str, int]


def _count(stmt: Select[Any]) -> int:
    return int(db.session.scalar(stmt) or 0)


def write_client_zip(
    client_id: int, target: Path, progress: Progress | None = None, *, now: datetime | None = None
) -> ExportResult:
    """Write the export of one client to `target` (complete, or not at all).

    Reads within the caller's session; `progress(percent, step)` may commit it (the
    worker does, so the polling page moves). Raises LookupError for an unknown client."""
    now = now or utcnow()
    client = db.session.get(Client, client_id)
    if client is None:
        raise LookupError(f"no client {client_id}")
    org = organisation()
    zone = _zone()
    labels = _labels()
    emails = _count(select(func.count()).where(SentMessage.client_id == client_id))
    notes = _count(select(func.count()).where(Note.client_id == client_id))
    steps = _Steps(progress, total_units=SMALL_STEPS + emails + notes)
    users = _Users()
    # Read what the card holds before any progress commit expires the object.
    client_pairs = _client_pairs(client, users)
    custom = list(_custom_rows(client))
    info = _information(client, org, zone)
    folder = export_folder_name(client)
    readme = _readme(client, org, now, zone)

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=".export-", suffix=PART_SUFFIX, dir=target.parent)
    os.close(fd)
    part = Path(part_name)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="crm-export-") as scratch,
            zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive,
        ):
            json_path = Path(scratch) / "data.json"
            with json_path.open("w", encoding="utf-8") as json_file:
                writer = _Writer(
                    archive=archive,
                    folder=folder,
                    workbook=Workbook(write_only=True),
                    json_file=json_file,
                    zone=zone,
                    yes=_("Yes"),
                    no=_("No"),
                )
                json_file.write("{")
                writer.value("format", FORMAT)
                writer.value("version", FORMAT_VERSION)
                writer.value("generated_at", now)
                writer.record("client", _("Client"), client_pairs)
                steps.advance(1, _("Client"))
                writer.table(
                    "custom_fields",
                    _("Custom fields"),
                    [
                        Col("label", _("Field")),
                        Col("value", _("Value")),
                        Col("personal_data", _("Personal data")),
                        Col("type", _("Type")),
                        Col("archived", _("Archived field")),
                    ],
                    custom,
                )
                steps.advance(1, _("Custom fields"))
                basis, status = _lookup(labels["basis"]), _lookup(labels["status"])
                kind, method = _lookup(labels["kind"]), _lookup(labels["method"])
                writer.table(
                    "consents",
                    _("Consents"),
                    [
                        Col("purpose", _("Purpose")),
                        Col("legal_basis", _("Legal basis"), basis),
                        Col("status", _("Status"), status),
                        Col("since", _("Since")),
                        Col("expires_at", _("Valid until")),
                        Col("ended_at", _("Ended")),
                        Col("notice_version", _("Notice version")),
                        Col("notice_language", _("Notice language")),
                    ],
                    _consent_rows(client_id),
                )
                steps.advance(1, _("Consents"))
                writer.table(
                    "consent_events",
                    _("Consent history"),
                    [
                        Col("occurred_at", _("When")),
                        Col("purpose", _("Purpose")),
                        Col("kind", _("Event"), kind),
                        Col("method", _("How"), method),
                        Col("notice_version", _("Notice version")),
                        Col("notice_language", _("Notice language")),
                        Col("notice_hash", _("Notice SHA-256")),
                        Col("expires_at", _("Valid until")),
                        Col("source_url", _("Source URL")),
                        Col("user_agent", _("Browser")),
                        Col("ip", _("IP address (shortened)")),
                        Col("recorded_by", _("Recorded by")),
                        Col("note", _("Note")),
                        Col("recorded_at", _("Recorded")),
                    ],
                    _consent_event_rows(client_id, users),
                )
                steps.advance(1, _("Consent history"))
                writer.table(
                    "notices",
                    _("Notice texts"),
                    [
                        Col("purpose", _("Purpose")),
                        Col("language", _("Language")),
                        Col("version", _("Version")),
                        Col("created_at", _("Published")),
                        Col("hash", _("SHA-256")),
                        Col("text", _("Text")),
                    ],
                    _notice_rows(client_id),
                )
                steps.advance(1, _("Notice texts"))
                writer.table(
                    "list_memberships",
                    _("Mailing lists"),
                    [
                        Col("list", _("List")),
                        Col("status", _("Status")),
                        Col("since", _("Since")),
                        Col("updated_at", _("Last change")),
                    ],
                    _membership_rows(client_id),
                )
                steps.advance(1, _("Mailing lists"))
                writer.table(
                    "subscription_events",
                    _("Subscription history"),
                    [
                        Col("occurred_at", _("When")),
                        Col("list", _("List")),
                        Col("old_status", _("Before")),
                        Col("status", _("After")),
                        Col("source", _("Where")),
                        Col("campaign", _("Campaign")),
                        Col("ip", _("IP address (shortened)")),
                        Col("user_agent", _("Browser")),
                        Col("changed_by", _("Changed by")),
                    ],
                    _subscription_event_rows(client_id, users),
                )
                steps.advance(1, _("Subscription history"))
                writer.table(
                    "emails",
                    _("Emails"),
                    [
                        Col("sent_at", _("Sent")),
                        Col("to", _("To")),
                        Col("subject", _("Subject")),
                        Col("campaign", _("Campaign")),
                        Col("message_id", _("Message-ID")),
                        Col("file", _("File in this export")),
                    ],
                    _email_rows(client_id, writer, steps, zone),
                )
                writer.table(
                    "notes",
                    _("Notes and activities"),
                    [
                        Col("occurred_at", _("When")),
                        Col("kind", _("Kind")),
                        Col("body", _("Text")),
                        Col("author", _("By")),
                        Col("created_at", _("Recorded")),
                    ],
                    _note_rows(client_id, users, steps),
                )
                writer.table(
                    "tasks",
                    _("Tasks"),
                    [
                        Col("title", _("Task")),
                        Col("details", _("Details")),
                        Col("status", _("Status")),
                        Col("due_date", _("Due")),
                        Col("assignee", _("Assigned to")),
                        Col("created_at", _("Created")),
                        Col("completed_at", _("Completed")),
                    ],
                    _task_rows(client_id, users),
                )
                steps.advance(1, _("Tasks"))
                writer.table(
                    "deals",
                    _("Deals"),
                    [
                        Col("title", _("Deal")),
                        Col("stage", _("Stage")),
                        Col("amount", _("Amount")),
                        Col("currency", _("Currency")),
                        Col("expected_close", _("Expected close")),
                        Col("owner", _("Owner")),
                        Col("created_at", _("Created")),
                        Col("updated_at", _("Updated")),
                    ],
                    _deal_rows(client_id, users),
                )
                steps.advance(1, _("Deals"))
                writer.table(
                    "appointments",
                    _("Appointments"),
                    [
                        Col("starts_at", _("Starts")),
                        Col("ends_at", _("Ends")),
                        Col("service", _("Service")),
                        Col("status_label", _("Status")),
                        Col("location", _("Location")),
                        Col("staff", _("With")),
                        Col("notes", _("Notes")),
                        Col("source", _("Booked via")),
                        Col("created_at", _("Booked")),
                        Col("cancelled_at", _("Cancelled")),
                    ],
                    _appointment_rows(client_id, users),
                )
                steps.advance(1, _("Appointments"))
                writer.table(
                    "attachments",
                    _("Attachments"),
                    [
                        Col("filename", _("File name")),
                        Col("uploaded_at", _("Added")),
                        Col("size", _("Size (bytes)")),
                        Col("content_type", _("Type")),
                        Col("sha256", _("SHA-256")),
                        Col("uploaded_by", _("Added by")),
                        Col("file", _("File in this export")),
                    ],
                    _attachment_rows(client_id, writer, users),
                )
                steps.advance(1, _("Attachments"))
                _write_information(writer, info)
                json_file.write("\n}\n")
            steps.advance(1, _("Writing the workbook"))
            xlsx_path = Path(scratch) / "data.xlsx"
            writer.workbook.save(xlsx_path)
            archive.write(xlsx_path, f"{folder}/data.xlsx")
            archive.write(json_path, f"{folder}/data.json")
            archive.writestr(f"{folder}/README.txt", readme.encode("utf-8"))
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return ExportResult(size=target.stat().st_size, counts=writer.counts)


# --- export jobs -----------------------------------------------------------------------


def active_export(client_id: int, user_id: int) -> DataExport | None:
    """This user's export of this client that is still being built, if any."""
    return db.session.scalar(
        select(DataExport)
        .where(
            DataExport.client_id == client_id,
            DataExport.requested_by_id == user_id,
            DataExport.status.in_([ExportStatus.PENDING.value, ExportStatus.RUNNING.value]),
        )
        .order_by(DataExport.id.desc())
        .limit(1)
    )


def recent_exports(client_id: int, user_id: int, limit: int = 5) -> list[DataExport]:
    """This user's latest exports of this client, newest first."""
    return list(
        db.session.scalars(
            select(DataExport)
            .where(DataExport.client_id == client_id, DataExport.requested_by_id == user_id)
            .order_by(DataExport.id.desc())
            .limit(limit)
        )
    )


def start_export(client: Client, user: User, request_id: int | None = None) -> DataExport:
    """A pending export row (flushed; the caller commits, then enqueues the actor).
    A second click while one is being built returns that one instead of a duplicate."""
    from crm.audit.services import record

    existing = active_export(client.id, user.id)
    if existing is not None:
        return existing
    export = DataExport(
        client_id=client.id,
        request_id=request_id,
        requested_by_id=user.id,
        status=ExportStatus.PENDING.value,
        progress=0,
        step="",
    )
    db.session.add(export)
    db.session.flush()
    record(
        "privacy.export_started",
        target_type="data_export",
        target_id=export.id,
        client_id=client.id,
        details={"request_id": request_id, "via": "web"},
        actor=user,
    )
    return export


def _locale_for(user_id: int | None) -> str:
    locale = None
    if user_id is not None:
        locale = db.session.scalar(select(User.locale).where(User.id == user_id))
    return locale or organisation().default_locale or "en"


def run_export(export_id: int, now: Callable[[], datetime] = utcnow) -> str:
    """Build a pending export (the actor's body). Idempotent: only the worker that
    moves the row from pending to running builds it; a redelivered message finds it
    running, done, failed or gone and does nothing. Returns the status it left."""
    claimed = db.session.execute(
        update(DataExport)
        .where(DataExport.id == export_id, DataExport.status == ExportStatus.PENDING.value)
        .values(
            status=ExportStatus.RUNNING.value,
            started_at=now(),
            heartbeat_at=now(),
            progress=0,
            step="",
            error="",
        )
    ).rowcount
    db.session.commit()
    if not claimed:
        current = db.session.scalar(select(DataExport.status).where(DataExport.id == export_id))
        return current or "missing"
    row = db.session.execute(
        select(DataExport.client_id, DataExport.requested_by_id).where(DataExport.id == export_id)
    ).one()
    file_name = f"export-{export_id}-{secrets.token_hex(8)}.zip"
    target = export_root() / file_name

    def report(percent: int, step: str) -> None:
        db.session.execute(
            update(DataExport)
            .where(DataExport.id == export_id, DataExport.status == ExportStatus.RUNNING.value)
            .values(progress=percent, step=step[:64], heartbeat_at=now())
        )
        db.session.commit()

    try:
        with force_locale(_locale_for(row.requested_by_id)):
            result = write_client_zip(row.client_id, target, report)
    except Exception as error:  # recorded on the row: the page shows it; no retry
        db.session.rollback()
        log.exception("export %s failed", export_id)
        message = str(error) if isinstance(error, OSError | LookupError) else type(error).__name__
        db.session.execute(
            update(DataExport)
            .where(DataExport.id == export_id, DataExport.status == ExportStatus.RUNNING.value)
            .values(
                status=ExportStatus.FAILED.value,
                error=_("The export could not be written: %(error)s", error=message)[:2000],
                finished_at=now(),
            )
        )
        db.session.commit()
        return ExportStatus.FAILED.value
    finished = now()
    done = db.session.execute(
        update(DataExport)
        .where(DataExport.id == export_id, DataExport.status == ExportStatus.RUNNING.value)
        .values(
            status=ExportStatus.DONE.value,
            progress=100,
            step="",
            file_name=file_name,
            size=result.size,
            finished_at=finished,
            heartbeat_at=finished,
            expires_at=finished + timedelta(days=download_days()),
        )
    ).rowcount
    db.session.commit()
    if not done:
        # The row went while we wrote (the client was erased, or the export was handed
        # to another worker as stale): the file belongs to no one.
        with contextlib.suppress(OSError):
            target.unlink()
        current = db.session.scalar(select(DataExport.status).where(DataExport.id == export_id))
        return current or "missing"
    return ExportStatus.DONE.value


def reconcile_exports(now: datetime) -> tuple[int, list[int]]:
    """Exports the database says are waiting (flushed; the caller commits, then sends
    the returned ids to the actor): pending ones whose message may be lost, and running
    ones whose worker stopped (no heartbeat) go back to pending; any not finished long
    after they were asked for are failed. Returns (failed, ids to nudge)."""
    failed = db.session.execute(
        update(DataExport)
        .where(
            DataExport.status.in_([ExportStatus.PENDING.value, ExportStatus.RUNNING.value]),
            DataExport.created_at < now - GIVE_UP_AFTER,
        )
        .values(
            status=ExportStatus.FAILED.value,
            error=_("The export was not finished in time; please start it again."),
            finished_at=now,
        )
    ).rowcount
    db.session.execute(
        update(DataExport)
        .where(
            DataExport.status == ExportStatus.RUNNING.value,
            DataExport.heartbeat_at < now - STALE_AFTER,
        )
        .values(status=ExportStatus.PENDING.value, progress=0, step="")
    )
    nudge = list(
        db.session.scalars(
            select(DataExport.id).where(
                DataExport.status == ExportStatus.PENDING.value,
                DataExport.created_at < now - NUDGE_AFTER,
            )
        )
    )
    db.session.flush()
    return failed, nudge


def _remove_file(file_name: str) -> bool:
    if not file_name:
        return False
    path = export_root() / file_name
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def expire_exports(now: datetime) -> dict[str, int]:
    """Remove the files of exports past their download window and mark them expired
    (flushed; the runner commits); remove temporary files of interrupted writes."""
    rows = db.session.execute(
        select(DataExport.id, DataExport.file_name).where(
            DataExport.status == ExportStatus.DONE.value, DataExport.expires_at <= now
        )
    ).all()
    removed = 0
    for row in rows:
        removed += _remove_file(row.file_name)
    if rows:
        db.session.execute(
            update(DataExport)
            .where(DataExport.id.in_([r.id for r in rows]))
            .values(status=ExportStatus.EXPIRED.value, file_name="")
        )
    stale_parts = 0
    cutoff = (now - PART_MAX_AGE).timestamp()
    for part in export_root().glob(f".export-*{PART_SUFFIX}"):
        with contextlib.suppress(OSError):
            if part.stat().st_mtime < cutoff:
                part.unlink()
                stale_parts += 1
    db.session.flush()
    return {"expired": len(rows), "files_removed": removed, "partial_files_removed": stale_parts}


def export_file_names(client_id: int) -> list[str]:
    """The export files of one client, for erasure: read them before the rows go (they
    cascade with the client), remove them with `remove_export_files` after the commit.
    An export still being written at that moment removes its own file when it finds its
    row gone."""
    return list(
        db.session.scalars(
            select(DataExport.file_name).where(
                DataExport.client_id == client_id, DataExport.file_name != ""
            )
        )
    )


def remove_export_files(names: Iterable[str]) -> int:
    """Remove these export files (see `export_file_names`); how many were there."""
    return sum(_remove_file(name) for name in names)
