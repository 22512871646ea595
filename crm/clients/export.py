"""The client list as a file: CSV or xlsx, with the columns the user shows in the list,
for exactly the clients the list matches (same query, same permission scope).

Spreadsheet formula injection: a cell that begins with = + - @ (or a tab or carriage
return) would run as a formula when the file is opened. In xlsx such text is written as
a string cell, which is never evaluated; CSV has no cell types, so the text gets a
leading apostrophe, which spreadsheet programs read as "this is text".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from sqlalchemy import Select
from sqlalchemy.orm import joinedload, selectinload

from crm.clients.listing import Column
from crm.clients.models import Client
from crm.extensions import db
from crm.fields.models import CustomField, FieldType
from crm.fields.values import format_phone
from crm.web.xlsx import cell as xlsx_cell

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BATCH = 1000
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def neutralise(text: str) -> str:
    """CSV text that no spreadsheet will evaluate as a formula."""
    return f"'{text}" if text.startswith(FORMULA_START) else text


@dataclass(frozen=True)
class ExportColumn:
    label: str
    value: Callable[[Client], Any]  # str, int, float, bool, date, datetime or None


def _custom_value(field: CustomField) -> Callable[[Client], Any]:
    def value(client: Client) -> Any:
        raw = client.custom.get(field.key)
        kind = field.type
        if kind == FieldType.CHECKBOX:
            return bool(raw)
        if raw is None or raw == "" or raw == []:
            return None
        if kind == FieldType.DATE:
            try:
                return date.fromisoformat(raw)
            except (TypeError, ValueError):
                return str(raw)
        if kind == FieldType.PHONE:
            return format_phone(raw)
        if kind == FieldType.MULTI_CHOICE:
            return ", ".join(raw) if isinstance(raw, list) else str(raw)
        return raw

    return value


def export_columns(columns: Sequence[Column], zone: ZoneInfo) -> list[ExportColumn]:
    """The name first, then the list's chosen columns, in order."""

    def local(moment: datetime | None) -> datetime | None:
        # Spreadsheets have no time zones: local wall time of the organisation.
        return moment.astimezone(zone).replace(tzinfo=None, microsecond=0) if moment else None

    core: dict[str, ExportColumn] = {
        "email": ExportColumn(_("Email"), lambda c: c.email),
        "phone": ExportColumn(_("Phone"), lambda c: format_phone(c.phone)),
        "city": ExportColumn(_("City"), lambda c: c.city),
        "company": ExportColumn(_("Company"), lambda c: c.company),
        "owner": ExportColumn(_("Owner"), lambda c: c.owner.display_name if c.owner else ""),
        "tags": ExportColumn(_("Tags"), lambda c: ", ".join(t.name for t in c.tags)),
        "created": ExportColumn(_("Created"), lambda c: local(c.created_at)),
        "updated": ExportColumn(_("Updated"), lambda c: local(c.updated_at)),
    }
    out = [
        ExportColumn(_("First name"), lambda c: c.first_name),
        ExportColumn(_("Last name"), lambda c: c.last_name),
    ]
    for column in columns:
        if column.field is not None:
            out.append(ExportColumn(column.field.label, _custom_value(column.field)))
        elif column.key in core:
            out.append(core[column.key])
    return out


def iter_clients(stmt: Select[tuple[Client]]) -> Iterator[Client]:
    """Every client the statement matches, in id order, a batch at a time (keyset on
    id, so memory stays flat however many match)."""
    after = 0
    stmt = stmt.options(joinedload(Client.owner), selectinload(Client.tags)).order_by(None)
    while True:
        batch = list(
            db.session.scalars(stmt.where(Client.id > after).order_by(Client.id).limit(BATCH))
        )
        if not batch:
            return
        yield from batch
        after = batch[-1].id
        for client in batch:  # keep the identity map from growing with the export
            db.session.expunge(client)


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float):
        return str(value)
    return neutralise(str(value))


def csv_chunks(columns: Sequence[ExportColumn], clients: Iterable[Client]) -> Iterator[str]:
    """CSV (RFC 4180, comma, CRLF) in chunks; a byte-order mark first, so spreadsheet
    programs read the UTF-8 (Łódź, Müller, Dvořák) right."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")
    writer.writerow([neutralise(c.label) for c in columns])
    for n, client in enumerate(clients, start=1):
        writer.writerow([_csv_text(c.value(client)) for c in columns])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def xlsx_bytes(columns: Sequence[ExportColumn], clients: Iterable[Client], title: str) -> bytes:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31] or "Clients")

    def cell(value: Any, header: bool = False) -> WriteOnlyCell:
        return xlsx_cell(sheet, value, bold=header)

    sheet.append([cell(c.label, header=True) for c in columns])
    for client in clients:
        sheet.append([cell(c.value(client)) for c in columns])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
