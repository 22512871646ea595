from __future__ import annotations

from datetime import datetime

from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import joinedload

from crm.auth.models import User
from crm.extensions import db
from crm.notes.models import Note, NoteKind
from crm.sqltypes import utcnow

NOTE_PAGE = 20
MAX_BODY = 20_000


def add_note(
    client_id: int, kind: NoteKind, body: str, author: User, occurred_at: datetime | None = None
) -> Note:
    note = Note(
        client_id=client_id,
        kind=kind.value,
        body=body.strip(),
        author_id=author.id,
        occurred_at=occurred_at or utcnow(),
    )
    db.session.add(note)
    db.session.flush()
    return note


def timeline_page(
    client_id: int, before: tuple[datetime, int] | None, limit: int = NOTE_PAGE
) -> tuple[list[Note], str | None]:
    """Newest first; `before` is the (occurred_at, id) of the last entry already shown.
    Returns the entries and the token for the next (older) page, if there is one."""
    stmt = (
        select(Note)
        .options(joinedload(Note.author).load_only(*User.display_columns()))
        .where(Note.client_id == client_id)
        .order_by(Note.occurred_at.desc(), Note.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stamp, note_id = before
        bound = tuple_(literal(stamp, type_=Note.occurred_at.type), literal(note_id))
        stmt = stmt.where(tuple_(Note.occurred_at, Note.id) < bound)
    notes = list(db.session.scalars(stmt))
    page = notes[:limit]
    return page, encode_before(page[-1]) if len(notes) > limit else None


def encode_before(note: Note) -> str:
    return f"{note.occurred_at.isoformat()}|{note.id}"


def decode_before(token: str | None) -> tuple[datetime, int] | None:
    if not token or "|" not in token:
        return None
    stamp, _, note_id = token.rpartition("|")
    try:
        return datetime.fromisoformat(stamp), int(note_id)
    except ValueError:
        return None
