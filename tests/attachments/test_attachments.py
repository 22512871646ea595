from __future__ import annotations

import gc
import io
import warnings
from pathlib import Path

import pytest
from sqlalchemy import select

from crm.attachments.models import Attachment
from crm.extensions import db
from tests.conftest import login, make_client, make_user

PDF = b"%PDF-1.4\n" + b"0" * 2000


@pytest.fixture
def large_request_bodies():  # type: ignore[no-untyped-def]
    """Werkzeug's test client spools a large multipart body to a temporary file and
    leaves closing it to the garbage collector; collect it here, where its
    ResourceWarning is expected, instead of at some later test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _stored_files(app) -> list[Path]:  # type: ignore[no-untyped-def]
    root = Path(app.config["CRM_UPLOAD_DIR"])
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def card(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return make_client().id


def _upload(http, client_id: int, name: str, content: bytes):  # type: ignore[no-untyped-def]
    return http.post(
        f"/clients/{client_id}/attachments",
        data={"file": (io.BytesIO(content), name)},
        content_type="multipart/form-data",
        headers={"HX-Request": "true"},
    )


def test_upload_and_download_keep_the_name_with_diacritics(admin_client, app, card):
    before = len(_stored_files(app))
    response = _upload(admin_client, card, "Umowa – Łódź, Müller.pdf", PDF)
    assert response.status_code == 200
    assert "Umowa – Łódź, Müller.pdf" in response.get_data(as_text=True)
    with app.app_context():
        attachment = db.session.scalar(select(Attachment))
        assert attachment.size_bytes == len(PDF) and attachment.content_type == "application/pdf"
        attachment_id = attachment.id
    assert len(_stored_files(app)) == before + 1
    download = admin_client.get(f"/attachments/{attachment_id}")
    assert download.data == PDF
    download.close()
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Umowa%20%E2%80%93%20%C5%81%C3%B3d%C5%BA" in disposition
    assert download.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("skrypt.html", b"<script>alert(1)</script>", "cannot be attached"),
        ("program.exe", b"MZ\x90\x00", "cannot be attached"),
        ("faktura.pdf", b"MZ\x90\x00 not a pdf", "Programs and scripts cannot be attached"),
        ("faktura.pdf", b"just text", "does not match its .pdf extension"),
        ("pusty.txt", b"", "The file is empty."),
        ("bez-rozszerzenia", b"data", "cannot be attached"),
    ],
)
def test_forbidden_uploads_are_refused_and_nothing_is_stored(
    admin_client, app, card, name, content, message
):
    before = _stored_files(app)
    response = _upload(admin_client, card, name, content)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Attachment)) is None
    assert _stored_files(app) == before


def test_oversized_upload_is_refused_without_leftovers(
    admin_client, app, card, large_request_bodies
):
    limit = app.config["CRM_MAX_UPLOAD_BYTES"]
    before = _stored_files(app)
    response = _upload(admin_client, card, "skan.pdf", b"%PDF" + b"0" * limit)
    assert "larger than the 1 MB limit" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Attachment)) is None
    assert _stored_files(app) == before


def test_request_over_the_body_limit_gets_a_clear_413(
    admin_client, app, card, large_request_bodies
):
    too_big = b"%PDF" + b"0" * app.config["MAX_CONTENT_LENGTH"]
    response = admin_client.post(
        f"/clients/{card}/attachments",
        data={"file": (io.BytesIO(too_big), "ogromny.pdf")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert "larger than the" in response.get_data(as_text=True)


def test_delete_removes_row_and_file(admin_client, app, card):
    _upload(admin_client, card, "notatka.txt", "Zażółć gęślą jaźń".encode())
    with app.app_context():
        attachment_id = db.session.scalar(select(Attachment.id))
    files = _stored_files(app)
    response = admin_client.post(f"/attachments/{attachment_id}/delete")
    assert response.status_code == 200
    with app.app_context():
        assert db.session.get(Attachment, attachment_id) is None
    assert len(_stored_files(app)) == len(files) - 1


def test_deleting_the_client_removes_its_files(admin_client, app, card):
    before = len(_stored_files(app))
    _upload(admin_client, card, "a.txt", b"abc")
    assert len(_stored_files(app)) == before + 1
    admin_client.post(f"/clients/{card}/delete")
    assert len(_stored_files(app)) == before


def test_attachments_follow_the_card_scope(client, app):
    with app.app_context():
        owner = make_user("wlasciciel@example.com", role="sales")
        make_user("obcy@example.com", role="sales")
        client_id = make_client(owner_id=owner.id).id
    login(client, "wlasciciel@example.com")
    _upload(client, client_id, "poufne.txt", b"tajne")
    with app.app_context():
        attachment_id = db.session.scalar(select(Attachment.id))
    client.post("/logout")
    login(client, "obcy@example.com")
    assert client.get(f"/attachments/{attachment_id}").status_code == 404
    assert client.post(f"/attachments/{attachment_id}/delete").status_code == 404
    assert _upload(client, client_id, "x.txt", b"x").status_code == 404
