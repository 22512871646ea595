"""CSV import into a list: mapping, custom fields, matching by email, per-row errors,
diacritics, the ledger, the page and the command."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from crm.audit.models import AuditEntry
from crm.clients.models import Client
from crm.consents.models import ConsentEvent, ConsentState, LegalBasis
from crm.consents.policy import may_contact
from crm.extensions import db
from crm.mailing import importer, services
from crm.mailing.importer import ImportFailed
from crm.mailing.models import Subscription, SubscriptionEvent
from tests.conftest import make_client, make_field
from tests.mailing.factories import make_list

CSV = (
    "Imię;Nazwisko;E-mail;Telefon;Miasto;Branża\n"
    "Łucja;Wójcik;lucja@example.pl;601 234 567;Łódź;Fryzjer\n"
    "Jürgen;Müller;JUERGEN@Example.de;;München;\n"
    "Jiří;Dvořák;not-an-email;;Brno;\n"
    "Zofia;Wiśniewska;zofia@example.pl;123;Kraków;\n"
    "Anna;Kowalska;lucja@example.pl;;Gdańsk;\n"
    ";;;;;\n"
    "Eva;Nováková;eva@example.cz;;Praha;Hacker\n"
)


def _run(text: str, list_name: str = "Newsletter", basis: str = "consent", **kw):  # type: ignore[no-untyped-def]
    result = importer.import_clients(io.StringIO(text), list_name, basis, source_name="t.csv", **kw)
    db.session.commit()
    return result


def test_import_with_mapping_custom_fields_and_row_errors(ctx):
    make_field("Branża", "single_choice", choices=["Fryzjer", "Kosmetyczka"])
    db.session.commit()
    existing = make_client(first_name="Eva", last_name="Stará", email="eva@example.cz")
    result = _run(CSV)
    assert result.list_created and result.rows == 6  # the empty line is skipped
    assert (result.created, result.matched, result.subscribed) == (2, 0, 2)
    problems = {(e.row, e.column) for e in result.errors}
    assert (4, "E-mail") in problems  # invalid email
    assert (5, "Telefon") in problems  # invalid phone
    assert (6, "email") in problems  # same address as row 2
    assert (8, "Branża") in problems  # not a choice
    lucja = db.session.scalar(select(Client).where(Client.email == "lucja@example.pl"))
    assert (lucja.first_name, lucja.city, lucja.phone) == ("Łucja", "Łódź", "+48601234567")
    assert list(lucja.custom.values()) == ["Fryzjer"]
    assert "lucja wojcik" in lucja.search_text and "601234567" in lucja.search_text
    juergen = db.session.scalar(select(Client).where(Client.last_name == "Müller"))
    assert juergen.email == "JUERGEN@example.de"
    assert may_contact(lucja.id, services.find_list("newsletter").purpose_id, "email")
    events = db.session.scalars(select(ConsentEvent)).all()
    assert {(e.kind, e.method, e.note) for e in events} == {("given", "import", "import t.csv")}
    assert db.session.scalar(select(func.count()).select_from(ConsentState)) == 2
    assert db.session.scalar(select(func.count()).select_from(SubscriptionEvent)) == 2
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "mailing.import"))
    assert entry.details["created"] == 2 and entry.details["errors"] == 4
    # The existing client was not touched (the Branża error kept it out this time).
    assert existing.last_name == "Stará"
    report = importer.error_report(result.errors)
    assert report.splitlines()[0] == "Row,Column,Problem" and "Same address as row 2" in report


def test_matching_by_email_again_and_unsubscribed_kept_out(ctx):
    first = _run("email,first_name\nola@example.pl,Ola\npiotr@example.pl,Piotr\n", basis="b")
    assert first.created == 2
    mlist = services.find_list("Newsletter")
    assert mlist.purpose.legal_basis == LegalBasis.CONTRACT.value
    services.unsubscribe(
        db.session.scalar(
            select(Subscription).join(Client).where(Client.email == "piotr@example.pl")
        )
    )
    services.suppress("new@example.pl", "manual")
    db.session.commit()
    again = _run(
        "email,first_name\nola@example.pl,Aleksandra\npiotr@example.pl,P\nnew@example.pl,N\n",
        basis="contract",
    )
    assert (again.created, again.matched, again.already, again.subscribed) == (1, 2, 1, 0)
    messages = [e.message for e in again.errors]
    assert any("Unsubscribed from this list before" in m for m in messages)
    assert any("suppression list" in m for m in messages)
    assert db.session.scalar(select(func.count()).select_from(Client)) == 3
    ola = db.session.scalar(select(Client).where(Client.email == "ola@example.pl"))
    assert ola.first_name == "Ola"  # existing data is not overwritten
    with pytest.raises(ImportFailed, match="another legal basis"):
        _run("email\nx@example.pl\n", basis="consent")


def test_bad_files_and_options(ctx):
    make_list("Archived").archived_at = services.now_utc(None)
    db.session.commit()
    with pytest.raises(ImportFailed, match="Unknown legal basis"):
        _run("email\na@example.pl\n", basis="because")
    with pytest.raises(ImportFailed, match="email address"):
        _run("name\nAda\n")
    with pytest.raises(ImportFailed, match="empty"):
        _run("")
    with pytest.raises(ImportFailed, match="archived"):
        _run("email\na@example.pl\n", list_name="Archived")
    with pytest.raises(ImportFailed, match="one column"):
        _run("a,b\nx@example.pl,y@example.pl\n", mapping=["email", "email"])
    assert importer.parse_basis("legitimate_interests") == LegalBasis.LEGITIMATE_INTEREST
    assert importer.parse_basis("f") == LegalBasis.LEGITIMATE_INTEREST


def test_import_page_upload_map_and_report(app, admin_client):
    data = "Vorname,Nachname,Mail\nJürgen,Müller,jm@example.de\nX,Y,broken\n".encode()
    upload = admin_client.post(
        "/admin/lists/import",
        data={"file": (io.BytesIO(data), "kunden.csv")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 302
    url = upload.headers["Location"]
    page = admin_client.get(url).get_data(as_text=True)
    assert (
        "Jürgen" in page
        and 'value="first_name" selected' in page
        and 'value="email" selected' in page
    )
    key = url.rsplit("/", 1)[1]
    missing = admin_client.post(
        url, data={"upload": key, "list_name": "", "basis": "consent", "method": "import"}
    )
    assert missing.status_code == 422
    form = {
        "upload": key,
        "list_name": "Kunden DE",
        "basis": "consent",
        "method": "web_form",
        "map_0": "first_name",
        "map_1": "last_name",
        "map_2": "email",
    }
    done = admin_client.post(url, data=form)
    text = done.get_data(as_text=True)
    assert done.status_code == 200 and "New clients: 1" in text and "Rows with problems: 1" in text
    report = admin_client.get(f"/admin/lists/import/{key}/errors.csv")
    assert report.status_code == 200 and "attachment" in report.headers["Content-Disposition"]
    assert "Row,Column,Problem" in report.get_data(as_text=True)
    assert admin_client.get("/admin/lists/import/../../etc/errors.csv").status_code == 404
    assert admin_client.get(url).status_code == 404  # the upload is gone after the import
    with app.app_context():
        assert db.session.scalar(select(ConsentEvent.method)) == "web_form"


def test_import_page_refuses_non_utf8(app, admin_client):
    upload = admin_client.post(
        "/admin/lists/import",
        data={"file": (io.BytesIO("email\nłódź@example.pl\n".encode("cp1250") * 50), "x.csv")},
        content_type="multipart/form-data",
    )
    page = admin_client.get(upload.headers["Location"], follow_redirects=True)
    assert "UTF-8" in page.get_data(as_text=True)


def test_cli_import(app, tmp_path):
    path = tmp_path / "clients.csv"
    path.write_text(
        "first_name,last_name,email\nTomáš,Dvořák,tomas@example.cz\nA,B,bad\n", encoding="utf-8"
    )
    report = tmp_path / "errors.csv"
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "import",
            "clients",
            str(path),
            "--list",
            "Zpravodaj",
            "--basis",
            "consent",
            "--report",
            str(report),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "1 new clients" in result.output and "(new list)" in result.output
    assert report.read_text(encoding="utf-8").splitlines()[1].startswith("3,")
    bad = runner.invoke(
        args=["import", "clients", str(path), "--list", "Zpravodaj", "--basis", "nope"]
    )
    assert bad.exit_code != 0 and "Unknown legal basis" in bad.output
    with app.app_context():
        assert (
            db.session.scalar(select(Client.last_name).where(Client.email == "tomas@example.cz"))
            == "Dvořák"
        )


def test_malformed_csv_is_a_message(ctx):
    big = "x" * 200_000
    with pytest.raises(ImportFailed, match="not valid CSV"):
        _run(f'email,first_name\na@example.pl,"{big}"\n')


def test_stale_import_files_are_removed(ctx):
    import os
    from datetime import UTC, datetime, timedelta

    from crm.mailing.tasks import import_files_cleanup

    now = datetime.now(UTC)
    fresh = importer.import_dir() / (importer.store_upload(b"email\nanna@example.com\n") + ".csv")
    old_key = importer.store_upload(b"email\nzofia@example.com\n")
    old = importer.import_dir() / f"{old_key}.csv"
    report = importer.import_dir() / f"{old_key}.errors.csv"
    report.write_text("row;column;message\n", encoding="utf-8")
    two_days_ago = (now - timedelta(days=2)).timestamp()
    for path in (old, report):
        os.utime(path, (two_days_ago, two_days_ago))
    assert import_files_cleanup(now) == {"removed": 2}
    assert fresh.exists() and not old.exists() and not report.exists()
    assert importer.upload_path(old_key) is None
    fresh.unlink()
