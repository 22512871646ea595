from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from crm.fields.models import FieldType
from crm.web.forms import options

TYPE_LABELS = {
    FieldType.TEXT: _l("Text"),
    FieldType.LONG_TEXT: _l("Long text"),
    FieldType.NUMBER: _l("Number"),
    FieldType.DATE: _l("Date"),
    FieldType.CHECKBOX: _l("Checkbox (yes/no)"),
    FieldType.SINGLE_CHOICE: _l("Single choice"),
    FieldType.MULTI_CHOICE: _l("Multiple choice"),
    FieldType.EMAIL: _l("Email"),
    FieldType.PHONE: _l("Phone"),
    FieldType.URL: _l("Web address"),
}


class FieldForm(FlaskForm):
    label = StringField(_l("Label"), validators=[DataRequired(), Length(max=100)])
    field_type = SelectField(
        _l("Type"), choices=options((t.value, label) for t, label in TYPE_LABELS.items())
    )
    choices = TextAreaField(
        _l("Choices"),
        description=_l("One per line. Only for single and multiple choice."),
        render_kw={"rows": 4},
    )
    help_text = StringField(_l("Help text"), validators=[Length(max=300)])
    required = BooleanField(_l("Required"))
    personal_data = BooleanField(
        _l("Personal data"),
        default=True,
        description=_l("Included in data exports and erased on erasure."),
    )
    show_in_list = BooleanField(_l("Show as a column in the client list"))
