"""Attachment storage. Files live in CRM_UPLOAD_DIR (a directory every web process
mounts), named by a random key; the database row is written only after the file is
complete, and a failed upload leaves neither a row nor a file behind."""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from crm.attachments.models import Attachment
from crm.auth.models import User
from crm.extensions import db

# What staff attach to a client: documents, images, spreadsheets, mail. Executables,
# scripts and HTML (which a browser would run) are refused.
ALLOWED_EXTENSIONS = {
    "pdf",
    "png",
    "jpg",
    "jpeg",
    "gif",
    "webp",
    "heic",
    "txt",
    "csv",
    "rtf",
    "odt",
    "ods",
    "doc",
    "docx",
    "xls",
    "xlsx",
    "ppt",
    "pptx",
    "eml",
    "msg",
}
# Formats with a fixed signature: the content must match the extension.
SIGNATURES = {
    "pdf": (b"%PDF",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "docx": (b"PK\x03\x04",),
    "xlsx": (b"PK\x03\x04",),
    "pptx": (b"PK\x03\x04",),
    "odt": (b"PK\x03\x04",),
    "ods": (b"PK\x03\x04",),
}
EXECUTABLE_SIGNATURES = (b"MZ", b"\x7fELF", b"#!", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe")
CHUNK = 64 * 1024


class UploadError(ValueError):
    """Why an upload was refused, for a person."""


def upload_root() -> Path:
    return Path(current_app.config["CRM_UPLOAD_DIR"])


def storage_path(key: str) -> Path:
    return upload_root() / key[:2] / key


def _extension(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def clean_filename(filename: str) -> str:
    """Keep the name a person gave (with its diacritics), minus path parts and controls."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*')
    return name.strip(" .")[:200]


def store_upload(client_id: int, upload: FileStorage, user: User) -> Attachment:
    filename = clean_filename(upload.filename or "")
    if not filename:
        raise UploadError(_("Choose a file first."))
    extension = _extension(filename)
    if extension not in ALLOWED_EXTENSIONS:
        allowed = ", ".join(sorted(ALLOWED_EXTENSIONS))
        raise UploadError(
            _("Files of this type cannot be attached. Allowed: %(types)s.", types=allowed)
        )
    limit = current_app.config["CRM_MAX_UPLOAD_BYTES"]
    key = uuid.uuid4().hex
    final = storage_path(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{key}.part")
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with partial.open("wb") as out:
            while chunk := upload.stream.read(CHUNK):
                if not head:
                    head = chunk[:16]
                size += len(chunk)
                if size > limit:
                    raise UploadError(
                        _("The file is larger than the %(mb)s MB limit.", mb=limit // (1024 * 1024))
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise UploadError(_("The file is empty."))
        if head.startswith(EXECUTABLE_SIGNATURES):
            raise UploadError(_("Programs and scripts cannot be attached."))
        expected = SIGNATURES.get(extension)
        if expected and not head.startswith(expected):
            raise UploadError(
                _("The file's content does not match its .%(ext)s extension.", ext=extension)
            )
        partial.replace(final)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        attachment = Attachment(
            client_id=client_id,
            filename=filename,
            content_type=content_type,
            size_bytes=size,
            sha256=digest.hexdigest(),
            storage_key=key,
            uploaded_by_id=user.id,
        )
        db.session.add(attachment)
        db.session.flush()
    except BaseException:
        partial.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    return attachment


def client_attachments(client_id: int) -> list[Attachment]:
    stmt = (
        select(Attachment)
        .where(Attachment.client_id == client_id)
        .order_by(Attachment.created_at.desc(), Attachment.id.desc())
    )
    return list(db.session.scalars(stmt))


def remove_stored_files(keys: Iterable[str]) -> None:
    """After the commit that deleted their rows."""
    for key in keys:
        with contextlib.suppress(OSError):
            storage_path(key).unlink(missing_ok=True)
