from __future__ import annotations

from flask import Blueprint, abort, request
from flask.typing import ResponseReturnValue
from flask_login import current_user

from crm.auth.permissions import Permission
from crm.clients.policy import get_client_or_404
from crm.extensions import db
from crm.notes.forms import KIND_LABELS, NoteForm
from crm.notes.models import Note, NoteKind
from crm.notes.services import NOTE_PAGE, add_note, decode_before, timeline_page
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("notes", __name__, template_folder="templates")


@bp.app_context_processor
def _kinds() -> dict[str, object]:
    return {"note_kinds": KIND_LABELS}


@bp.route("/clients/<int:client_id>/notes", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def create(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    form = NoteForm()
    if form.validate_on_submit():
        add_note(client.id, NoteKind(form.kind.data), form.body.data or "", current_user)
        db.session.commit()
        form = NoteForm(formdata=None)
    notes, more = timeline_page(client.id, before=None, limit=NOTE_PAGE)
    return render(
        "notes/_timeline.html", client=client, notes=notes, more_notes=more, note_form=form
    )


@bp.route("/clients/<int:client_id>/notes")
@requires(Permission.CLIENTS_VIEW)
def more(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    notes, more_notes = timeline_page(client.id, decode_before(request.args.get("before")))
    return render("notes/_items.html", client=client, notes=notes, more_notes=more_notes)


@bp.route("/notes/<int:note_id>/delete", methods=["POST"])
@requires(Permission.CLIENTS_EDIT)
def delete(note_id: int) -> ResponseReturnValue:
    note = db.session.get(Note, note_id)
    if note is None:
        abort(404)
    get_client_or_404(current_user, note.client_id)  # scope check on the owning card
    db.session.delete(note)
    db.session.commit()
    return ""
