from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import DataRequired, Length


class NetworkForm(FlaskForm):
    cidr = StringField(
        _l("Address or range"),
        validators=[DataRequired(), Length(max=49)],
        description=_l("A CIDR range such as 192.0.2.0/24 or 2001:db8::/32, or one address."),
    )
    role = SelectField(_l("Applies to"), choices=[], default="")
    note = StringField(_l("Note"), validators=[Length(max=200)])
    confirm_lockout = BooleanField(_l("I understand this locks me out"))


class RemoveNetworkForm(FlaskForm):
    confirm_lockout = BooleanField(_l("I understand this locks me out"))
