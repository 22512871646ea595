"""Exporting the client list: CSV and xlsx, the list's columns and query, formula-safe."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.extensions import db
from tests.conftest import login, make_client, make_field, make_user

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+48 601", "-2+3", "@SUM(A1)"]


@pytest.fixture
def rows(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        contract = make_field("Contract", "checkbox", show_in_list=True)
        value = make_field("Lifetime value", "number", show_in_list=True)
        since = make_field("Customer since", "date", show_in_list=True)
        make_client(
            first_name="Łucja",
            last_name="Dvořák",
            city="Łódź",
            email="lucja@example.com",
            custom={contract.key: 1, value.key: 1250.5, since.key: "2024-03-01"},
        )
        make_client(first_name="Jürgen", last_name="Müller", city="München", custom={})
        for n, text in enumerate(HOSTILE):
            make_client(first_name=text, last_name=f"Zły{n}", city="Kraków", custom={})


def _csv(response) -> list[list[str]]:  # type: ignore[no-untyped-def]
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def test_csv_has_the_list_columns_and_diacritics(admin_client, rows):
    response = admin_client.get("/clients/export?format=csv")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    table = _csv(response)
    header = table[0]
    assert header[:2] == ["First name", "Last name"]
    assert {"Email", "City", "Contract", "Lifetime value", "Customer since"} <= set(header)
    by_last = {row[1]: dict(zip(header, row, strict=True)) for row in table[1:]}
    lucja = by_last["Dvořák"]
    assert lucja["First name"] == "Łucja" and lucja["City"] == "Łódź"
    assert lucja["Contract"] == "Yes" and lucja["Lifetime value"] == "1250.5"
    assert lucja["Customer since"] == "2024-03-01"
    assert by_last["Müller"]["Contract"] == "No"
    assert len(table) == 1 + 2 + len(HOSTILE)


def test_csv_cells_that_look_like_formulas_become_text(admin_client, rows):
    table = _csv(admin_client.get("/clients/export?format=csv"))
    first_names = {row[0] for row in table[1:]}
    for text in HOSTILE:
        assert f"'{text}" in first_names
        assert text not in first_names


def test_xlsx_keeps_types_and_never_writes_formulas(admin_client, rows):
    response = admin_client.get("/clients/export?format=xlsx")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.get_data())).active
    header = [c.value for c in sheet[1]]
    cells = {row[1].value: dict(zip(header, row, strict=True)) for row in sheet.iter_rows(2)}
    lucja = cells["Dvořák"]
    assert lucja["City"].value == "Łódź"
    assert lucja["Lifetime value"].value == 1250.5
    assert lucja["Customer since"].value.date() == date(2024, 3, 1)
    assert lucja["Contract"].value is True
    for n, text in enumerate(HOSTILE):
        cell = cells[f"Zły{n}"]["First name"]
        assert cell.value == text and cell.data_type == "s"


def test_the_query_narrows_the_export_and_is_audited(admin_client, app, rows):
    table = _csv(admin_client.get('/clients/export?format=csv&q="Contract" < 1'))
    assert "Dvořák" not in {row[1] for row in table[1:]}
    assert "Müller" in {row[1] for row in table[1:]}
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "clients.export"))
        assert entry is not None
        assert entry.details["rows"] == len(table) - 1
        assert entry.details["query"] == '"Contract" < 1'


def test_bad_requests_get_400_and_roles_without_export_get_403(client, app, rows):
    with app.app_context():
        make_user()
        make_user("czytelnik@example.com", role="readonly")
    login(client, "admin@example.com")
    assert client.get("/clients/export?format=pdf").status_code == 400
    response = client.get("/clients/export?format=csv&q=city = ")
    assert response.status_code == 400
    assert "cannot be exported" in response.get_data(as_text=True)
    client.post("/logout")
    login(client, "czytelnik@example.com")
    assert client.get("/clients/export?format=csv").status_code == 403
