"""CSV import of clients into a mailing list, set-based.

Rows are validated in Python (the client form's email and phone rules, the custom
fields' parsers), then written in chunks: one SELECT of the chunk's emails, one
multi-row INSERT of the new clients (RETURNING their ids), one INSERT each of
subscriptions, consent events and subscription events, and the consent states inserted
or updated in bulk. Per-row ORM objects and flushes made 100k rows take minutes.

Rules: clients are matched by their normalised email and never duplicated; existing
clients are subscribed but their data is not changed; an address that unsubscribed
from the list before, or is suppressed, is reported and not subscribed again (an
import must not override a person's own choice). Subscriptions from an import are
confirmed: whoever imports asserts the basis and method, recorded in the ledger.
One audit entry records the import with its counts.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import String, select

from crm.audit.services import record
from crm.auth.models import User
from crm.clients.models import Client
from crm.consents import services as ledger
from crm.consents.models import (
    ConsentPurpose,
    LegalBasis,
    Method,
)
from crm.extensions import db
from crm.fields.models import CustomField
from crm.fields.services import active_fields
from crm.fields.values import FieldValueError, parse_email, parse_phone, parse_value
from crm.mailing import services
from crm.mailing.bulk import insert_many
from crm.mailing.models import (
    EventSource,
    MailingList,
    OptIn,
    SuppressionReason,
)
from crm.org.services import organisation
from crm.text import fold

CHUNK = 1000
CORE_TARGETS = (
    "first_name",
    "last_name",
    "company",
    "email",
    "phone",
    "street",
    "postal_code",
    "city",
    "country",
)
CORE_LIMITS = {
    "first_name": 100,
    "last_name": 100,
    "company": 200,
    "street": 200,
    "postal_code": 20,
    "city": 100,
}
# Header names (folded) that map themselves, in the languages the CRM ships.
HEADER_GUESSES = {
    "first_name": {"first name", "firstname", "imie", "vorname", "jmeno", "given name"},
    "last_name": {"last name", "lastname", "surname", "nazwisko", "nachname", "prijmeni"},
    "company": {"company", "firma", "organisation", "organization", "spolecnost"},
    "email": {"email", "e-mail", "mail", "email address", "adres e-mail"},
    "phone": {"phone", "telefon", "tel", "telephone", "mobile"},
    "street": {"street", "ulica", "strasse", "ulice", "address"},
    "postal_code": {"postal code", "zip", "postcode", "kod pocztowy", "plz", "psc"},
    "city": {"city", "miasto", "ort", "stadt", "mesto"},
    "country": {"country", "kraj", "land", "zeme"},
}
BASIS_ALIASES = {"legitimate_interests": LegalBasis.LEGITIMATE_INTEREST}
DEFAULT_RETENTION_MONTHS = 24


class ImportFailed(ValueError):
    """The import as a whole cannot run (bad file, list, basis); shown to the user."""


@dataclass
class RowError:
    row: int  # 1-based data row number as a spreadsheet shows it (header is row 1)
    column: str
    message: str


@dataclass
class ImportResult:
    rows: int = 0
    created: int = 0
    matched: int = 0
    subscribed: int = 0
    already: int = 0
    errors: list[RowError] = field(default_factory=list)
    list_name: str = ""
    list_created: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "matched": self.matched,
            "subscribed": self.subscribed,
            "already": self.already,
            "errors": len(self.errors),
        }


def parse_basis(name: str) -> LegalBasis:
    """An Art. 6(1) basis by its name in crm.consents (consent, contract,
    legal_obligation, vital_interests, public_task, legitimate_interest), or its
    letter a-f."""
    word = (name or "").strip().lower()
    if word in BASIS_ALIASES:
        return BASIS_ALIASES[word]
    for basis in LegalBasis:
        if word in (basis.name.lower(), basis.value):
            return basis
    raise ImportFailed(
        _(
            "Unknown legal basis “%(name)s”; use one of: %(names)s.",
            name=name,
            names=", ".join(b.name.lower() for b in LegalBasis),
        )
    )


def read_csv(stream: TextIO) -> tuple[list[str], Iterator[list[str]]]:
    """The header and the rows. Comma or semicolon (spreadsheets in PL/DE/CZ write
    semicolons), detected from the header line."""
    first = stream.readline()
    if not first.strip():
        raise ImportFailed(_("The file is empty."))
    delimiter = ";" if first.count(";") > first.count(",") else ","
    header = next(csv.reader([first], delimiter=delimiter))
    return [h.strip() for h in header], csv.reader(stream, delimiter=delimiter)


def open_text(path: Path) -> TextIO:
    """UTF-8 (with or without BOM); anything else is refused with a message rather
    than turning Łódź into mojibake."""
    raw = path.open("rb")
    head = raw.read(1 << 16)
    raw.close()
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the sample's end
            raise ImportFailed(_("Save the file as UTF-8 CSV and upload it again.")) from None
    return path.open("r", encoding="utf-8-sig", newline="")


def guess_mapping(header: Sequence[str], fields: Sequence[CustomField]) -> list[str]:
    """A target per column: a core field, `cf:<key>`, or '' (ignore)."""
    by_label = {fold(f.label): f"cf:{f.key}" for f in fields}
    by_label.update({fold(f.key): f"cf:{f.key}" for f in fields})
    targets = []
    for name in header:
        word = fold(name).replace("_", " ").strip()
        target = next((k for k, names in HEADER_GUESSES.items() if word in names), "")
        targets.append(target or by_label.get(fold(name), ""))
    return targets


def check_mapping(mapping: Sequence[str], fields: Sequence[CustomField]) -> None:
    allowed = set(CORE_TARGETS) | {f"cf:{f.key}" for f in fields}
    chosen = [t for t in mapping if t]
    unknown = [t for t in chosen if t not in allowed]
    if unknown:
        raise ImportFailed(_("Unknown field: %(name)s", name=", ".join(unknown)))
    doubled = sorted({t for t in chosen if chosen.count(t) > 1})
    if doubled:
        raise ImportFailed(_("Each field can take one column: %(name)s", name=", ".join(doubled)))
    if "email" not in chosen:
        raise ImportFailed(_("Choose the column with the email address."))


def _default_notice(list_name: str) -> str:
    org = organisation()
    return _(
        "%(org)s sends you the mailing list “%(list)s” to your email address. You can "
        "unsubscribe at any time with the link in every message.",
        org=org.legal_name or org.name,
        list=list_name,
    )


def resolve_list(name: str, basis: LegalBasis, by: User | None) -> tuple[MailingList, bool]:
    """The list by name, created (with a purpose of the basis) when missing. An existing
    list's purpose must rest on the chosen basis."""
    mlist = services.find_list(name)
    if mlist is not None:
        if mlist.is_archived:
            raise ImportFailed(_("The list “%(name)s” is archived.", name=mlist.name))
        if mlist.purpose.legal_basis != basis.value:
            raise ImportFailed(
                _(
                    "The list “%(name)s” rests on another legal basis (%(basis)s).",
                    name=mlist.name,
                    basis=LegalBasis(mlist.purpose.legal_basis).name.lower(),
                )
            )
        return mlist, False
    clean = " ".join(name.split())[:120]
    if not clean:
        raise ImportFailed(_("Name the list to import into."))
    spec = ledger.PurposeSpec(
        name=clean,
        legal_basis=basis,
        retention_months=DEFAULT_RETENTION_MONTHS,
        validity_months=ledger.DEFAULT_VALIDITY_MONTHS if basis == LegalBasis.CONSENT else None,
        channels=["email"],
        data_categories="name, email address",
        legitimate_interest=_("Direct marketing to our clients")
        if basis == LegalBasis.LEGITIMATE_INTEREST
        else "",
    )
    language = organisation().default_locale or "en"
    purpose = ledger.create_purpose(spec, {language: _default_notice(clean)}, by)
    mlist = services.create_list(
        services.ListSpec(name=clean, purpose_id=purpose.id, opt_in=OptIn.SINGLE), by
    )
    return mlist, True


@dataclass
class _Row:
    number: int
    values: dict[str, Any]
    custom: dict[str, Any]


def _validate(
    number: int,
    cells: list[str],
    mapping: Sequence[str],
    fields: dict[str, CustomField],
    region: str,
    errors: list[RowError],
    header: Sequence[str],
) -> _Row | None:
    values: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    ok = True
    for index, target in enumerate(mapping):
        if not target:
            continue
        raw = cells[index].strip() if index < len(cells) else ""
        column = header[index] if index < len(header) else str(index + 1)
        try:
            if "\x00" in raw:
                raise FieldValueError(_("The value contains a NUL character."))
            if target.startswith("cf:"):
                parsed = parse_value(fields[target[3:]], raw, region)
                if parsed is not None and parsed != []:
                    custom[target[3:]] = parsed
            elif target == "email":
                values["email"] = parse_email(raw) if raw else ""
            elif target == "phone":
                values["phone"] = parse_phone(raw, region) if raw else ""
            elif target == "country":
                if raw and (len(raw) != 2 or not raw.isalpha()):
                    raise FieldValueError(_("Use the two-letter country code, e.g. PL."))
                values["country"] = raw.upper()
            else:
                if len(raw) > CORE_LIMITS[target]:
                    raise FieldValueError(_("At most %(n)s characters.", n=CORE_LIMITS[target]))
                values[target] = " ".join(raw.split())
        except FieldValueError as exc:
            errors.append(RowError(number, column, str(exc)))
            ok = False
    if ok and not values.get("email"):
        errors.append(RowError(number, "email", _("An email address is needed for a list.")))
        ok = False
    return _Row(number, values, custom) if ok else None


def _search_text(values: dict[str, Any]) -> str:
    phone = values.get("phone", "")
    digits = "".join(ch for ch in phone if ch.isdigit())
    parts = [
        values.get("first_name", ""),
        values.get("last_name", ""),
        values.get("company", ""),
        values.get("email", ""),
        phone,
        digits,
    ]
    return fold(" ".join(p for p in parts if p))


def _write_chunk(
    rows: list[_Row],
    mlist: MailingList,
    method: Method,
    by: User | None,
    required: Sequence[CustomField],
    result: ImportResult,
    now: datetime,
    notice_id: int,
    note: str,
) -> None:
    emails = [r.values["email"] for r in rows]
    existing = dict(
        db.session.execute(
            select(Client.email, Client.id).where(services.among(Client.email, emails, String()))
        ).all()
    )
    result.matched += sum(1 for r in rows if r.values["email"] in existing)
    # A person whose data was erased is not added back by an import: the row is
    # reported and no client record is made (their suppression entry says "erased").
    fresh = [r for r in rows if r.values["email"] not in existing]
    erased_emails = {
        email
        for email, reason in services.suppression_reasons(r.values["email"] for r in fresh).items()
        if reason == SuppressionReason.ERASED.value
    }
    erased_phones = {
        phone
        for phone, reason in services.phone_suppression_reasons(
            r.values.get("phone", "") for r in fresh if r.values.get("phone")
        ).items()
        if reason == SuppressionReason.ERASED.value
    }
    new_rows = []
    for r in rows:
        if r.values["email"] in existing:
            continue
        if services.normalise_email(r.values["email"]) in erased_emails:
            result.errors.append(RowError(r.number, "email", _erased_message("email")))
            continue
        if r.values.get("phone") and services.normalise_phone(r.values["phone"]) in erased_phones:
            result.errors.append(RowError(r.number, "phone", _erased_message("phone")))
            continue
        missing = [f.label for f in required if f.key not in r.custom]
        if missing:
            result.errors.append(RowError(r.number, missing[0], _("This field is required.")))
            continue
        new_rows.append(r)
    if new_rows:
        params = []
        for r in new_rows:
            values = {k: r.values.get(k, "") for k in CORE_TARGETS}
            values.update(
                owner_id=by.id if by else None,
                custom=r.custom,
                search_text=_search_text(values),
                created_at=now,
                updated_at=now,
            )
            params.append(values)
        inserted = insert_many(Client.__table__, params, returning=("id", "email"))
        for client_id, email in inserted:
            existing[email] = client_id
        result.created += len(inserted)
    wanted = {r.values["email"]: r for r in rows if r.values["email"] in existing}
    client_ids = {existing[e]: r for e, r in wanted.items()}
    if not client_ids:
        return
    subscribed, skipped = services.bulk_subscribe(
        list(client_ids), mlist, method, by, EventSource.IMPORT, note, now, notice_id
    )
    result.subscribed += subscribed
    messages = {
        services.SUPPRESSED: _(
            "Suppressed address: not subscribed (the address is on the suppression list)."
        ),
        services.NOT_SUBSCRIBED: _("Unsubscribed from this list before; not added again."),
        services.RESTRICTED: _("Processing of this client's data is restricted: not subscribed."),
    }
    for client_id, reason in sorted(skipped.items(), key=lambda item: client_ids[item[0]].number):
        if reason == services.ALREADY:
            result.already += 1
        else:
            message = messages.get(reason, reason)
            result.errors.append(RowError(client_ids[client_id].number, "email", message))


def _erased_message(column: str) -> str:
    if column == "phone":
        return _(
            "Suppressed phone number: not subscribed, and no client record was made (the "
            "person's data was erased)."
        )
    return _(
        "Suppressed address: not subscribed, and no client record was made (the "
        "person's data was erased)."
    )


def _rows(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """The rows with their offset; a malformed file (an unclosed quote, a field over
    the csv module's size limit) ends the import with a message, not a crash."""
    offset = -1
    try:
        for offset, cells in enumerate(reader):
            yield offset, cells
    except csv.Error:
        raise ImportFailed(_("The file is not valid CSV near row %(n)s.", n=offset + 3)) from None


def import_clients(
    stream: TextIO,
    list_name: str,
    basis: LegalBasis | str,
    *,
    method: Method | str = Method.IMPORT,
    mapping: Sequence[str] | None = None,
    by: User | None = None,
    source_name: str = "",
    now: datetime | None = None,
) -> ImportResult:
    """Import the CSV into the list (created if missing); `mapping` gives a target per
    column (default: guessed from the header). Flushes; the caller commits. Row errors
    are collected, never raised."""
    now = ledger.now_utc(now)
    basis = basis if isinstance(basis, LegalBasis) else parse_basis(basis)
    method = Method(method)
    if method == Method.SYSTEM:
        raise ImportFailed(_("Choose how the clients agreed."))
    fields = active_fields()
    header, reader = read_csv(stream)
    mapping = list(mapping) if mapping is not None else guess_mapping(header, fields)
    check_mapping(mapping, fields)
    mlist, created = resolve_list(list_name, basis, by)
    purpose: ConsentPurpose = mlist.purpose
    notice = services._notice(purpose)
    region = organisation().default_phone_region or "PL"
    by_key = {f.key: f for f in fields}
    required = [f for f in fields if f.required]
    note = f"import {source_name}".strip()[:500]
    result = ImportResult(list_name=mlist.name, list_created=created)
    seen: dict[str, int] = {}
    chunk: list[_Row] = []
    for offset, cells in _rows(reader):
        number = offset + 2
        if not any(c.strip() for c in cells):
            continue
        result.rows += 1
        row = _validate(number, cells, mapping, by_key, region, result.errors, header)
        if row is None:
            continue
        email = row.values["email"]
        if email in seen:
            result.errors.append(
                RowError(number, "email", _("Same address as row %(n)s.", n=seen[email]))
            )
            continue
        seen[email] = number
        chunk.append(row)
        if len(chunk) >= CHUNK:
            _write_chunk(chunk, mlist, method, by, required, result, now, notice.id, note)
            chunk = []
    if chunk:
        _write_chunk(chunk, mlist, method, by, required, result, now, notice.id, note)
    result.errors.sort(key=lambda e: e.row)
    record(
        "mailing.import",
        target_type="mailing_list",
        target_id=mlist.id,
        details={
            **result.as_dict(),
            "list": mlist.name,
            "basis": basis.name.lower(),
            "method": method.value,
            "file": source_name[:200],
        },
        actor=by,
    )
    return result


def error_report(errors: Sequence[RowError]) -> str:
    """The per-row report as CSV text (row, column, message)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_("Row"), _("Column"), _("Problem")])
    for e in errors:
        writer.writerow([e.row, _safe_cell(e.column), _safe_cell(e.message)])
    return out.getvalue()


def _safe_cell(value: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


# --- files between the upload and the mapping step --------------------------------------


def import_dir() -> Path:
    path = Path(current_app.instance_path) / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_upload(data: bytes) -> str:
    key = secrets.token_hex(16)
    tmp = import_dir() / f"{key}.tmp"
    tmp.write_bytes(data)
    tmp.replace(import_dir() / f"{key}.csv")
    return key


# How long an uploaded file or an error report stays: enough to map the columns and
# download the report; the files hold personal data, so they do not stay for good.
IMPORT_FILE_HOURS = 24


def remove_stale_import_files(now: datetime, max_age: timedelta | None = None) -> int:
    """Delete uploads nobody imported and error reports older than `max_age`."""
    cutoff = (now - (max_age or timedelta(hours=IMPORT_FILE_HOURS))).timestamp()
    removed = 0
    for path in import_dir().iterdir():
        if path.suffix not in (".csv", ".tmp") or not path.is_file():
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    return removed


def upload_path(key: str, suffix: str = ".csv") -> Path | None:
    if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
        return None
    path = import_dir() / f"{key}{suffix}"
    return path if path.exists() else None
