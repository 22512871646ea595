from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length


class UnlockForm(FlaskForm):
    password = PasswordField(
        _l("Password"),
        validators=[DataRequired()],
        render_kw={"autocomplete": "current-password", "autofocus": True},
    )


class LoginForm(FlaskForm):
    email = EmailField(
        _l("Email"),
        validators=[DataRequired()],
        render_kw={"autocomplete": "username", "autofocus": True},
    )
    password = PasswordField(
        _l("Password"), validators=[DataRequired()], render_kw={"autocomplete": "current-password"}
    )


def _code_field(description: Any, autofocus: bool = False) -> StringField:
    # One field for a 6-digit code or a recovery code; spaces and dashes are ignored.
    render_kw: dict[str, Any] = {
        "autocomplete": "one-time-code",
        "autocapitalize": "off",
        "spellcheck": "false",
    }
    if autofocus:
        render_kw["autofocus"] = True
    return StringField(
        _l("Code"),
        validators=[DataRequired(), Length(max=32)],
        description=description,
        render_kw=render_kw,
    )


class SecondFactorForm(FlaskForm):
    """The second sign-in step: a code from the app, or a recovery code."""

    code = _code_field(
        _l("The 6-digit code from your authenticator app, or one of your recovery codes."),
        autofocus=True,
    )


class EnrolForm(FlaskForm):
    """Confirms a new secret: only a code from the app proves it was stored there."""

    code = StringField(
        _l("Code"),
        validators=[DataRequired(), Length(max=32)],
        description=_l("The 6-digit code your authenticator app shows now."),
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )


class RegenerateCodesForm(FlaskForm):
    code = _code_field(
        _l("A current code from your authenticator app (or one of your recovery codes).")
    )


class DisableTwoFactorForm(FlaskForm):
    password = PasswordField(
        _l("Password"), validators=[DataRequired()], render_kw={"autocomplete": "current-password"}
    )
    code = _code_field(
        _l("A current code from your authenticator app (or one of your recovery codes).")
    )


class AdminResetTwoFactorForm(FlaskForm):
    """The admin confirms with their own password, and their own code when they have 2FA
    (the view makes the code required then)."""

    password = PasswordField(
        _l("Your password"),
        validators=[DataRequired()],
        render_kw={"autocomplete": "current-password"},
    )
    code = StringField(
        _l("Your code"),
        validators=[Length(max=32)],
        description=_l("A current code from your own authenticator app."),
        render_kw={"autocomplete": "one-time-code", "autocapitalize": "off", "spellcheck": "false"},
    )
