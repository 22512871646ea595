from __future__ import annotations

from flask import Blueprint, abort, request, send_file
from flask.typing import ResponseReturnValue
from flask_login import current_user

from crm.attachments.models import Attachment
from crm.attachments.services import (
    UploadError,
    client_attachments,
    remove_stored_files,
    storage_path,
    store_upload,
)
from crm.auth.permissions import Permission
from crm.clients.policy import get_client_or_404
from crm.extensions import db
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("attachments", __name__, template_folder="templates")


def _get(attachment_id: int) -> Attachment:
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None:
        abort(404)
    get_client_or_404(current_user, attachment.client_id)  # same scope as the card
    return attachment


@bp.route("/clients/<int:client_id>/attachments", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def upload(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    error = None
    file = request.files.get("file")
    try:
        if file is None:
            raise UploadError("")
        store_upload(client.id, file, current_user)
        db.session.commit()
    except UploadError as exc:
        db.session.rollback()
        error = str(exc) or None
    return render(
        "attachments/_list.html",
        client=client,
        attachments=client_attachments(client.id),
        upload_error=error,
    )


@bp.route("/attachments/<int:attachment_id>")
@requires(Permission.CLIENTS_VIEW)
def download(attachment_id: int) -> ResponseReturnValue:
    attachment = _get(attachment_id)
    path = storage_path(attachment.storage_key)
    if not path.exists():
        abort(404)
    # Always a download, never rendered inline: an uploaded file cannot run in our origin.
    return send_file(
        path,
        mimetype=attachment.content_type,
        as_attachment=True,
        download_name=attachment.filename,
        max_age=0,
    )


@bp.route("/attachments/<int:attachment_id>/delete", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def delete(attachment_id: int) -> ResponseReturnValue:
    attachment = _get(attachment_id)
    client = attachment.client_id
    key = attachment.storage_key
    db.session.delete(attachment)
    db.session.commit()
    remove_stored_files([key])
    client_obj = get_client_or_404(current_user, client)
    return render(
        "attachments/_list.html", client=client_obj, attachments=client_attachments(client)
    )
