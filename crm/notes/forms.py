from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, TextAreaField
from wtforms.validators import DataRequired, Length

from crm.notes.models import NoteKind
from crm.notes.services import MAX_BODY
from crm.web.forms import options

KIND_LABELS = {
    NoteKind.NOTE: _l("Note"),
    NoteKind.CALL: _l("Call"),
    NoteKind.MEETING: _l("Meeting"),
    NoteKind.EMAIL: _l("Email"),
}


class NoteForm(FlaskForm):
    kind = SelectField(
        _l("Kind"),
        choices=options((k.value, v) for k, v in KIND_LABELS.items()),
        default=NoteKind.NOTE.value,
    )
    body = TextAreaField(
        _l("What happened?"),
        validators=[DataRequired(message=_l("Write something first.")), Length(max=MAX_BODY)],
        render_kw={"rows": 2},
    )
