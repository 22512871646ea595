"""Cells for write-only openpyxl workbooks, shared by every xlsx the app writes.

Spreadsheet formula injection: text that begins with = + - @ (or a tab or carriage
return) would run as a formula if it were written as one. Every str value here becomes
a string cell (data type "s"), which spreadsheet programs never evaluate, whatever it
begins with; numbers, dates and booleans keep their types.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font

XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Excel refuses a sheet title longer than this.
MAX_SHEET_TITLE = 31

_BOLD = Font(bold=True)
_WRAP = Alignment(wrap_text=True, vertical="top")


def cell(sheet: Any, value: Any, *, bold: bool = False, wrap: bool = False) -> WriteOnlyCell:
    """One cell of a write-only sheet; text is always text, never a formula."""
    item = WriteOnlyCell(sheet, value=value)
    if isinstance(value, str):
        item.data_type = "s"
        if wrap:
            item.alignment = _WRAP
    elif isinstance(value, datetime):
        item.number_format = "yyyy-mm-dd hh:mm"
    elif isinstance(value, date):
        item.number_format = "yyyy-mm-dd"
    if bold:
        item.font = _BOLD
    return item
