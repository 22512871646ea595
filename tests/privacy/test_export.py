"""Export of one client's data: the zip's contents round-trip (xlsx, .eml, JSON against
its schema, files), formulas stay text, diacritics survive; the job (start, progress,
idempotent actor, reconcile, expiry), the download (requester only, until it expires,
audited) and the command line."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zipfile
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dramatiq
import jsonschema
import openpyxl
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import crm.queue
from crm.audit.models import AuditEntry
from crm.extensions import db
from crm.privacy import export as exports
from crm.privacy.models import DataExport, ExportStatus
from crm.privacy.tasks import build_export, exports_expiry, exports_reconcile
from crm.sqltypes import utcnow
from tests.conftest import login, make_user
from tests.privacy.export_data import FORMULA, add_sent_message, make_demo_client

SHEETS = [
    "Client",
    "Custom fields",
    "Consents",
    "Consent history",
    "Notice texts",
    "Mailing lists",
    "Subscription history",
    "Emails",
    "Notes and activities",
    "Tasks",
    "Deals",
    "Appointments",
    "Attachments",
    "Information",
]


@pytest.fixture(autouse=True)
def _empty_broker() -> None:
    crm.queue.broker.flush_all()


@pytest.fixture(autouse=True)
def _export_dir(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of exports per test (ids repeat across rolled-back tests)."""
    folder = tmp_path / "exports"
    monkeypatch.setitem(app.config, "CRM_EXPORT_DIR", str(folder))
    return folder


@pytest.fixture
def admin_id(app: Flask, admin) -> int:  # type: ignore[no-untyped-def]
    from crm.auth.models import User

    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == "admin@example.com"))


@pytest.fixture
def demo(app: Flask):  # type: ignore[no-untyped-def]
    with app.test_request_context():
        return make_demo_client()


def _schema() -> dict:  # type: ignore[type-arg]
    return json.loads(exports.SCHEMA_PATH.read_text(encoding="utf-8"))


def _build(app: Flask, client_id: int, tmp_path: Path) -> Path:
    target = tmp_path / "out.zip"
    with app.test_request_context():
        exports.write_client_zip(client_id, target)
    return target


def _members(archive: zipfile.ZipFile) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    infos = {info.filename: info for info in archive.infolist()}
    folders = {name.split("/", 1)[0] for name in infos}
    assert len(folders) == 1, folders
    folder = folders.pop()
    return folder, {name.split("/", 1)[1]: info for name, info in infos.items()}


def test_export_round_trips(app: Flask, demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = _build(app, demo.client_id, tmp_path)
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        folder, members = _members(archive)
        # The folder names the client, diacritics intact, flagged as UTF-8 in the zip.
        assert folder == f"Export {demo.client_id} Jürgen Müller-Dvořák"
        assert all(
            info.flag_bits & 0x800 for info in members.values() if not info.filename.isascii()
        )
        assert {"data.xlsx", "data.json", "README.txt"} <= set(members)

        # Every email as sent: the exact bytes, and parseable by the email package.
        emls = sorted(name for name in members if name.startswith("emails/"))
        assert len(emls) == 3
        seen = {}
        for name in emls:
            raw = archive.read(f"{folder}/{name}")
            message = BytesParser(policy=policy.default).parsebytes(raw)
            seen[message["Message-ID"]] = raw
            assert message["Subject"] in demo.subjects
            assert "Dzień dobry, Jürgen!" in message.get_body(("plain",)).get_content()
        assert seen == demo.messages
        assert "emails/2026-11-03 1015 Zaproszenie do Łodzi.eml" in members
        # "/" and "?" cannot be in a file name; the rest of the subject stays.
        assert any(n.startswith("emails/") and "Dvořák _ Šťastný_ nabídka" in n for n in emls)

        # The files themselves, byte for byte, under their own (diacritic) names.
        for filename, content in demo.files.items():
            assert archive.read(f"{folder}/attachments/{filename}") == content
        assert members["attachments/skan.pdf"].compress_type == zipfile.ZIP_STORED

        data = json.loads(archive.read(f"{folder}/data.json").decode("utf-8"))
        workbook_bytes = archive.read(f"{folder}/data.xlsx")
        sheet_xml = [
            archive_xlsx.read(n).decode("utf-8")
            for archive_xlsx in [zipfile.ZipFile(io.BytesIO(workbook_bytes))]
            for n in archive_xlsx.namelist()
            if n.startswith("xl/worksheets/")
        ]

    # JSON: valid against the schema in the repository, with the same data.
    jsonschema.validate(data, _schema(), format_checker=jsonschema.FormatChecker())
    assert data["client"]["company"] == FORMULA
    assert data["client"]["city"] == "Łódź"
    assert data["custom_fields"][0]["value"] == "Šťastný Łódź"
    assert data["custom_fields"][0]["personal_data"] is True
    assert [e["kind"] for e in data["consent_events"]] == ["given", "withdrawn", "given"]
    assert data["consent_events"][0]["method"] == "web_form"
    assert data["consent_events"][0]["notice_version"] == 1
    assert data["notices"][0]["text"] == "Nasz newsletter raz w miesiącu – Łódź."
    assert data["consents"][0]["status"] == "given"
    assert [m["list"] for m in data["list_memberships"]] == [demo.list_name]
    assert [e["status"] for e in data["subscription_events"]] == ["confirmed"]
    assert sorted(m["message_id"] for m in data["emails"]) == sorted(demo.messages)
    assert {n["body"] for n in data["notes"]} == {"Rozmowa o wizycie w Łodzi.", FORMULA}
    assert data["tasks"][0]["title"] == "Oddzwonić – Müller"
    assert data["deals"][0]["amount"] == "199.00"
    (appointment,) = data["appointments"]
    assert appointment["service"] == demo.appointment_service
    assert appointment["status"] == "confirmed" and appointment["staff"] == "Kasia Wiśniewska"
    assert appointment["notes"] == "Prosi o fryzjerkę Dvořákovą."
    assert {a["filename"] for a in data["attachments"]} == set(demo.files)
    info = data["information"]
    assert info["source"] == "Given by you through a web form."
    assert demo.purpose_name in [p["name"] for p in info["purposes"]]
    assert any("Art. 77" in right for right in info["rights"])

    # xlsx: opens with openpyxl, every sheet present, formulas stay text.
    workbook = openpyxl.load_workbook(io.BytesIO(workbook_bytes))
    assert workbook.sheetnames == SHEETS
    card = {row[0].value: row[1] for row in workbook["Client"].iter_rows(min_row=2)}
    assert card["Company"].value == FORMULA
    assert card["Company"].data_type == "s"
    assert card["Last name"].value == "Müller-Dvořák"
    notes = [row[2].value for row in workbook["Notes and activities"].iter_rows(min_row=2)]
    assert FORMULA in notes
    assert all("<f>" not in xml for xml in sheet_xml)  # no formula anywhere
    history = list(workbook["Consent history"].iter_rows(min_row=2, values_only=True))
    assert [row[2] for row in history] == ["Given", "Withdrawn", "Given"]
    assert history[0][3] == "Web form"
    information = [c for row in workbook["Information"].iter_rows(values_only=True) for c in row]
    assert demo.purpose_name in information
    assert "Consent — Art. 6(1)(a)" in information
    emails = list(workbook["Emails"].iter_rows(min_row=2, values_only=True))
    assert {row[2] for row in emails} == set(demo.subjects)
    appointments = list(workbook["Appointments"].iter_rows(min_row=2, values_only=True))
    assert [(row[2], row[3]) for row in appointments] == [(demo.appointment_service, "Confirmed")]


def test_the_workbook_converts_with_libreoffice(app: Flask, demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip("LibreOffice (soffice) is not installed: the conversion check is skipped")
    target = _build(app, demo.client_id, tmp_path)
    with zipfile.ZipFile(target) as archive:
        folder, _names = _members(archive)
        (tmp_path / "data.xlsx").write_bytes(archive.read(f"{folder}/data.xlsx"))
    profile = (tmp_path / "lo-profile").as_uri()
    # A profile of its own, so a LibreOffice already running elsewhere is not reused.
    subprocess.run(  # noqa: S603 (the installed soffice, arguments built here)
        [
            soffice,
            f"-env:UserInstallation={profile}",
            "--headless",
            "--convert-to",
            "ods",
            "--outdir",
            str(tmp_path / "ods"),
            str(tmp_path / "data.xlsx"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with zipfile.ZipFile(tmp_path / "ods" / "data.ods") as ods:
        content = ods.read("content.xml").decode("utf-8")
    assert re.findall(r'<table:table table:name="([^"]+)"', content) == SHEETS
    assert "Müller-Dvořák" in content and "Šťastný Łódź" in content
    # The formula-like company is a text cell (office:value-type="string"), no formula.
    assert "table:formula" not in content
    assert "=HYPERLINK(&quot;http://x&quot;,&quot;y&quot;)" in content


def test_an_empty_client_exports_too(app: Flask, tmp_path: Path) -> None:
    from tests.conftest import make_client

    with app.app_context():
        client_id = make_client(first_name="", last_name="", company="").id
    target = _build(app, client_id, tmp_path)
    with zipfile.ZipFile(target) as archive:
        folder, _names = _members(archive)
        assert folder == f"Export {client_id} #{client_id}"
        data = json.loads(archive.read(f"{folder}/data.json"))
    jsonschema.validate(data, _schema(), format_checker=jsonschema.FormatChecker())
    assert data["emails"] == [] and data["attachments"] == []
    assert data["information"]["source"] == "Recorded by staff on your client record."


def test_missing_client_raises(app: Flask, tmp_path: Path) -> None:
    with app.test_request_context(), pytest.raises(LookupError):
        exports.write_client_zip(987654, tmp_path / "x.zip")
    assert not list(tmp_path.iterdir())  # no half-written file left behind


def test_progress_moves_and_streams_in_batches(
    app: Flask, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(exports, "BATCH", 7)
    monkeypatch.setattr(exports, "PROGRESS_EVERY", 7)
    with app.test_request_context():
        for n in range(40):
            add_sent_message(
                demo.client_id, "x@example.pl", f"Nr {n}", "Treść", utcnow() - timedelta(hours=n)
            )
        db.session.commit()
        seen: list[tuple[int, str]] = []
        exports.write_client_zip(
            demo.client_id, tmp_path / "p.zip", lambda p, s: seen.append((p, s))
        )
    percents = [p for p, _step in seen]
    assert percents == sorted(percents) and len(set(percents)) > 5
    assert max(percents) == 99  # 100 only once the file is in place
    assert "Emails" in {s for _p, s in seen}
    with zipfile.ZipFile(tmp_path / "p.zip") as archive:
        names = [n for n in archive.namelist() if "/emails/" in n]
    assert len(names) == 43  # keyset batches lose and repeat nothing


# --- the job and the pages ---------------------------------------------------------------


def _queued() -> list[dramatiq.Message]:
    queue = crm.queue.broker.queues[build_export.queue_name]
    messages = []
    while not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get_nowait()))
        queue.task_done()
    return messages


def _run_worker() -> None:
    worker = dramatiq.Worker(crm.queue.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        crm.queue.broker.join(build_export.queue_name, timeout=30_000)
        worker.join()
    finally:
        worker.stop()


def _audit(app: Flask, action: str) -> list[AuditEntry]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_start_watch_download(app: Flask, admin_client: FlaskClient, demo) -> None:  # type: ignore[no-untyped-def]
    response = admin_client.post(
        f"/clients/{demo.client_id}/exports", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Export started" in html and "Waiting for a worker" in html
    assert 'hx-trigger="every 1s"' in html
    with app.app_context():
        export = db.session.scalars(select(DataExport)).one()
        assert export.status == ExportStatus.PENDING.value
        export_id = export.id
    assert len(_audit(app, "privacy.export_started")) == 1

    # A second click while it is being built adds nothing.
    admin_client.post(f"/clients/{demo.client_id}/exports", headers={"HX-Request": "true"})
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(DataExport)) == 1

    _run_worker()
    with app.app_context():
        export = db.session.get(DataExport, export_id)
        assert export.status == ExportStatus.DONE.value, export.error
        assert export.progress == 100 and export.size > 0
        assert export.expires_at - export.finished_at == timedelta(days=7)
        path = exports.export_root() / export.file_name
        assert path.is_file()

    status = admin_client.get(f"/exports/{export_id}", headers={"HX-Request": "true"})
    body = status.get_data(as_text=True)
    assert "hx-trigger" not in body  # polling stops
    assert f"/exports/{export_id}/download" in body and "Download zip" in body
    assert "Vary" in status.headers and "HX-Request" in status.headers["Vary"]
    assert "<html" in admin_client.get(f"/exports/{export_id}").get_data(as_text=True)

    download = admin_client.get(f"/exports/{export_id}/download")
    assert download.status_code == 200
    assert download.mimetype == "application/zip"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Export" in disposition  # the name keeps its diacritics
    assert download.headers["Cache-Control"] == "private, no-store"
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        assert any(n.endswith("/data.xlsx") for n in archive.namelist())
    download.close()
    entries = _audit(app, "privacy.export_downloaded")
    assert len(entries) == 1 and entries[0].client_id == demo.client_id


def test_download_is_for_the_requester_only_and_expires(
    app: Flask, client: FlaskClient, demo, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        owner = make_user("owner@example.com")
        make_user("other@example.com")
        export = DataExport(client_id=demo.client_id, requested_by_id=owner.id)
        db.session.add(export)
        db.session.commit()
        export_id = export.id
        assert exports.run_export(export_id) == "done"

    login(client, "other@example.com")
    assert client.get(f"/exports/{export_id}").status_code == 404
    assert client.get(f"/exports/{export_id}/download").status_code == 404
    client.post("/logout")
    login(client, "owner@example.com")
    ok = client.get(f"/exports/{export_id}/download")
    assert ok.status_code == 200
    ok.close()

    with app.app_context():
        row = db.session.get(DataExport, export_id)
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    gone = client.get(f"/exports/{export_id}/download")
    assert gone.status_code == 410
    assert "expired" in gone.get_data(as_text=True)
    assert "Expired" in client.get(f"/exports/{export_id}").get_data(as_text=True)
    assert len(_audit(app, "privacy.export_downloaded")) == 1


def test_the_actor_is_idempotent(app: Flask, admin_id: int, demo) -> None:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        export = DataExport(client_id=demo.client_id, requested_by_id=admin_id)
        db.session.add(export)
        db.session.commit()
        assert exports.run_export(export.id) == "done"
        first = db.session.get(DataExport, export.id)
        name, finished = first.file_name, first.finished_at
        # A redelivered message: nothing is built again.
        assert exports.run_export(export.id) == "done"
        again = db.session.get(DataExport, export.id)
        assert (again.file_name, again.finished_at) == (name, finished)
        assert len(list(exports.export_root().glob(f"export-{export.id}-*.zip"))) == 1
        assert exports.run_export(123456) == "missing"


def test_a_failing_export_shows_its_error(
    app: Flask, admin_client: FlaskClient, admin_id: int, demo, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def broken(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exports, "write_client_zip", broken)
    with app.test_request_context():
        export = DataExport(client_id=demo.client_id, requested_by_id=admin_id)
        db.session.add(export)
        db.session.commit()
        assert exports.run_export(export.id) == "failed"
        export_id = export.id
    page = admin_client.get(f"/exports/{export_id}", headers={"HX-Request": "true"})
    assert "No space left on device" in page.get_data(as_text=True)
    assert admin_client.get(f"/exports/{export_id}/download").status_code == 409


def test_reconcile_nudges_pending_and_revives_dead_workers(app: Flask, admin_id: int, demo) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with app.test_request_context():
        rows = {
            "fresh": DataExport(client_id=demo.client_id, created_at=now),
            "lost": DataExport(client_id=demo.client_id, created_at=now - timedelta(minutes=5)),
            "dead": DataExport(
                client_id=demo.client_id,
                status="running",
                created_at=now - timedelta(minutes=30),
                heartbeat_at=now - timedelta(minutes=20),
            ),
            "alive": DataExport(
                client_id=demo.client_id,
                status="running",
                created_at=now - timedelta(minutes=30),
                heartbeat_at=now - timedelta(seconds=5),
            ),
            "ancient": DataExport(client_id=demo.client_id, created_at=now - timedelta(hours=3)),
        }
        db.session.add_all(rows.values())
        db.session.commit()
        ids = {key: row.id for key, row in rows.items()}
        stats = exports_reconcile(now)
        db.session.commit()
        status = {key: db.session.get(DataExport, i).status for key, i in ids.items()}
    assert stats == {"nudged": 2, "given_up": 1}
    assert status == {
        "fresh": "pending",
        "lost": "pending",
        "dead": "pending",
        "alive": "running",
        "ancient": "failed",
    }
    assert sorted(m.args[0] for m in _queued()) == sorted([ids["lost"], ids["dead"]])


def test_expiry_removes_files(app: Flask, admin_id: int, demo) -> None:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        export = DataExport(client_id=demo.client_id, requested_by_id=admin_id)
        db.session.add(export)
        db.session.commit()
        exports.run_export(export.id)
        row = db.session.get(DataExport, export.id)
        path = exports.export_root() / row.file_name
        stale_part = exports.export_root() / ".export-old.part"
        stale_part.write_bytes(b"half")
        old = (utcnow() - timedelta(days=2)).timestamp()
        import os

        os.utime(stale_part, (old, old))
        # Not yet expired; the interrupted write of two days ago goes.
        assert exports_expiry(utcnow()) == {
            "expired": 0,
            "files_removed": 0,
            "partial_files_removed": 1,
        }
        assert path.exists() and not stale_part.exists()
        stats = exports_expiry(row.expires_at + timedelta(seconds=1))
        db.session.commit()
        assert stats == {"expired": 1, "files_removed": 1, "partial_files_removed": 0}
        assert not path.exists() and not stale_part.exists()
        assert db.session.get(DataExport, export.id).status == "expired"


def test_remove_export_files_for_erasure(app: Flask, admin_id: int, demo) -> None:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        for _n in range(2):
            export = DataExport(client_id=demo.client_id, requested_by_id=admin_id)
            db.session.add(export)
            db.session.commit()
            exports.run_export(export.id)
        assert len(list(exports.export_root().glob("export-*.zip"))) >= 2
        names = exports.export_file_names(demo.client_id)
        assert len(names) == 2 and all((exports.export_root() / n).exists() for n in names)
        assert exports.remove_export_files(names) == 2
        assert not any((exports.export_root() / n).exists() for n in names)


def test_an_export_whose_row_went_removes_its_file(
    app: Flask, admin_id: int, demo, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Erasure while the worker writes: the finished file belongs to no one."""
    real = exports.write_client_zip

    def write_then_erase(client_id, target, progress=None, **kw):  # type: ignore[no-untyped-def]
        result = real(client_id, target, progress, **kw)
        db.session.execute(db.delete(DataExport).where(DataExport.client_id == client_id))
        db.session.commit()
        return result

    monkeypatch.setattr(exports, "write_client_zip", write_then_erase)
    with app.test_request_context():
        export = DataExport(client_id=demo.client_id, requested_by_id=admin_id)
        db.session.add(export)
        db.session.commit()
        export_id = export.id
        assert exports.run_export(export_id) == "missing"
        assert not list(exports.export_root().glob(f"export-{export_id}-*"))


def test_permissions_scope_and_bad_input(app: Flask, client: FlaskClient, demo) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        make_user("sales@example.com", role="sales")
        make_user("manager@example.com", role="manager")
    login(client, "sales@example.com")  # no export permission
    assert client.post(f"/clients/{demo.client_id}/exports").status_code == 403
    client.post("/logout")
    login(client, "manager@example.com")
    assert client.post("/clients/999999/exports").status_code == 404
    bad = client.post(f"/clients/{demo.client_id}/exports", data={"request_id": "abc"})
    assert bad.status_code == 400
    assert "not in the register" in bad.get_data(as_text=True)
    assert (
        client.post(f"/clients/{demo.client_id}/exports", data={"request_id": "424242"}).status_code
        == 400
    )
    # Without htmx: back to the card, with a message.
    started = client.post(f"/clients/{demo.client_id}/exports")
    assert started.status_code == 302 and started.headers["Location"].endswith(
        f"/clients/{demo.client_id}"
    )


def test_export_under_a_request(app: Flask, admin_client: FlaskClient, admin_id: int, demo) -> None:  # type: ignore[no-untyped-def]
    from datetime import date

    from crm.privacy.models import DataRequest

    with app.app_context():
        data_request = DataRequest(
            kind="access",
            client_id=demo.client_id,
            channel="email",
            received_on=date(2026, 12, 1),
            due_on=date(2027, 1, 1),
        )
        db.session.add(data_request)
        db.session.commit()
        request_id = data_request.id
    response = admin_client.post(
        f"/clients/{demo.client_id}/exports",
        data={"request_id": str(request_id)},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert f'id="request-export-{request_id}"' in response.get_data(as_text=True)
    with app.app_context():
        export = db.session.scalars(select(DataExport)).one()
        assert export.request_id == request_id
    # The request page shows the export block with this export in it.
    page = admin_client.get(f"/privacy/requests/{request_id}").get_data(as_text=True)
    assert f'id="request-export-{request_id}"' in page
    assert f'id="export-{export.id}"' in page and 'name="request_id"' in page


def test_the_card_section_offers_the_export(app: Flask, client: FlaskClient, demo) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        make_user("admin@example.com")
        make_user("reader@example.com", role="readonly")
    login(client, "admin@example.com")
    section = client.get(f"/clients/{demo.client_id}/privacy", headers={"HX-Request": "true"})
    html = section.get_data(as_text=True)
    assert f'id="client-export-{demo.client_id}"' in html
    assert f'hx-post="/clients/{demo.client_id}/exports"' in html
    assert 'name="csrf_token"' in html
    client.post("/logout")
    login(client, "reader@example.com")  # may see the card, may not export
    section = client.get(f"/clients/{demo.client_id}/privacy", headers={"HX-Request": "true"})
    assert section.status_code == 200
    assert "client-export-" not in section.get_data(as_text=True)


def test_organisation_recipients_are_named(app: Flask, demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from crm.org.services import organisation_for_update

    with app.test_request_context():
        organisation_for_update().recipients = (
            "Hosting: Example Cloud GmbH\n\nKsięgowość: Biuro Łódź"
        )
        db.session.commit()
    target = _build(app, demo.client_id, tmp_path)
    with zipfile.ZipFile(target) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.json"))
        data = json.loads(archive.read(name))
    assert data["information"]["recipients"] == [
        "Hosting: Example Cloud GmbH",
        "Księgowość: Biuro Łódź",
    ]


def test_command_line_export(app: Flask, demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "Łódź export.zip"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["export", "client", str(demo.client_id), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "emails 3" in result.output
    with zipfile.ZipFile(out) as archive:
        assert any(n.endswith("/data.json") for n in archive.namelist())
    entries = _audit(app, "privacy.export_cli")
    assert len(entries) == 1 and entries[0].details["size"] == out.stat().st_size

    missing = runner.invoke(args=["export", "client", "999999", "--out", str(out)])
    assert missing.exit_code != 0 and "No client 999999" in missing.output
    nobody = runner.invoke(
        args=["export", "client", str(demo.client_id), "--out", str(out), "--by", "x@y.z"]
    )
    assert nobody.exit_code != 0 and "No user x@y.z" in nobody.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Łódź Müller Dvořák", "Łódź Müller Dvořák"),
        ("Re: a/b\\c <d> | e? *f*", "Re_ a_b_c _d_ _ e_ _f"),
        ("  ..hidden. ", "hidden"),
        ("line\r\nbreak\ttab", "line_break_tab"),
        ("", "fallback"),
        ("///", "fallback"),
        ("S\u030ct\u030ca\u0301stny\u0301", "Šťástný"),  # decomposed: composed again (NFC)
    ],
)
def test_safe_name(text: str, expected: str) -> None:
    assert exports.safe_name(text, "fallback") == expected


def test_safe_name_limits_the_length() -> None:
    assert len(exports.safe_name("ř" * 300, "x", limit=80)) == 80


def test_recipients_are_an_organisation_setting(app: Flask, admin_client: FlaskClient) -> None:
    form = {
        "name": "Salon Łódź",
        "recipients": "Hosting: Example Cloud GmbH\r\nKsięgowość: Biuro Müller",
        "default_phone_region": "PL",
        "timezone": "Europe/Warsaw",
        "default_currency": "PLN",
        "default_locale": "pl",
        "reminders_basis": "f",
        "calendar_feed_detail": "booked",
    }
    page = admin_client.get("/admin/organisation/").get_data(as_text=True)
    assert "Recipients and processors" in page
    assert admin_client.post("/admin/organisation/", data=form).status_code == 302
    with app.app_context():
        from crm.org.models import Organisation

        saved = db.session.get(Organisation, 1)
        assert saved.recipients.splitlines() == [
            "Hosting: Example Cloud GmbH",
            "Księgowość: Biuro Müller",
        ]
