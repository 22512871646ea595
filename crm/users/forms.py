from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, Length

from crm.auth.models import Role, Team
from crm.auth.passwords import MAX_LENGTH, MIN_LENGTH
from crm.auth.permissions import ClientScope, Permission
from crm.web.forms import options

RESOURCE_LABELS = {
    "clients": _l("Clients"),
    "tasks": _l("Tasks"),
    "deals": _l("Deals"),
    "campaigns": _l("Campaigns"),
    "fields": _l("Custom fields"),
    "settings": _l("Settings"),
    "users": _l("Users and roles"),
    "audit": _l("Audit log"),
    "lists": _l("Mailing lists"),
    "requests": _l("Data-subject requests"),
    "appointments": _l("Appointments"),
}

PERMISSION_LABELS = {
    Permission.CLIENTS_VIEW: _l("View"),
    Permission.CLIENTS_EDIT: _l("Add and edit"),
    Permission.CLIENTS_DELETE: _l("Delete"),
    Permission.CLIENTS_EXPORT: _l("Export"),
    Permission.CLIENTS_ERASE: _l("Erase"),
    Permission.TASKS_VIEW: _l("View"),
    Permission.TASKS_EDIT: _l("Add and edit"),
    Permission.DEALS_VIEW: _l("View"),
    Permission.DEALS_EDIT: _l("Add and edit"),
    Permission.CAMPAIGNS_SEND: _l("Send campaigns"),
    Permission.FIELDS_MANAGE: _l("Manage fields"),
    Permission.SETTINGS_MANAGE: _l("Manage settings"),
    Permission.USERS_MANAGE: _l("Manage users and roles"),
    Permission.AUDIT_VIEW: _l("View the audit log"),
    Permission.LISTS_MANAGE: _l("Manage lists"),
    Permission.REQUESTS_MANAGE: _l("Manage requests"),
    Permission.APPOINTMENTS_VIEW: _l("View"),
    Permission.APPOINTMENTS_EDIT: _l("Book and change"),
    Permission.APPOINTMENTS_MANAGE: _l("Manage services and hours"),
}

# One line under the permissions whose reach is not obvious from the name.
PERMISSION_HELP = {
    Permission.CLIENTS_EXPORT: _l(
        "Download everything held on a client (data-subject access or portability request)."
    ),
    Permission.CLIENTS_ERASE: _l(
        "Erase a client and everything about them for good (right to erasure)."
    ),
    Permission.CAMPAIGNS_SEND: _l("Send email campaigns to mailing lists."),
    Permission.FIELDS_MANAGE: _l("Add, change and archive the custom fields on every card."),
    Permission.SETTINGS_MANAGE: _l("Organisation settings, deal stages and network access."),
    Permission.USERS_MANAGE: _l(
        "Invite and deactivate users, reset passwords and 2FA, edit roles and teams."
    ),
    Permission.AUDIT_VIEW: _l("Read who signed in, viewed and changed what."),
    Permission.LISTS_MANAGE: _l("Create mailing lists, import subscribers, manage groups."),
    Permission.REQUESTS_MANAGE: _l(
        "Register data-subject requests, extend their deadline and record the answer."
    ),
    Permission.APPOINTMENTS_EDIT: _l(
        "Book, reschedule and cancel appointments; edit one's own working hours."
    ),
    Permission.APPOINTMENTS_MANAGE: _l(
        "Define the services clients book and edit anyone's working hours."
    ),
}

SCOPE_LABELS = {
    ClientScope.OWN.value: _l("Own clients only"),
    ClientScope.TEAM.value: _l("Clients of their team"),
    ClientScope.ALL.value: _l("All clients"),
}


def permission_groups() -> list[tuple[str, Any, list[Permission]]]:
    """(resource, label, permissions) in the order of the Permission enum."""
    groups: dict[str, list[Permission]] = {}
    for permission in Permission:
        groups.setdefault(permission.value.split(":", 1)[0], []).append(permission)
    return [(key, RESOURCE_LABELS.get(key, key), perms) for key, perms in groups.items()]


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def role_options(roles: list[Role]) -> list[Any]:
    return options((str(role.id), role.name) for role in roles)


def team_options(teams: list[Team]) -> list[Any]:
    return options([("", _l("No team")), *((str(team.id), team.name) for team in teams)])


class _UserFields(FlaskForm):
    full_name = StringField(
        _l("Name"), validators=[Length(max=200)], filters=[_strip], render_kw={"maxlength": 200}
    )
    role_id = SelectField(_l("Role"), choices=[], validators=[DataRequired()])
    team_id = SelectField(_l("Team"), choices=[], default="")


class InviteForm(_UserFields):
    email = EmailField(
        _l("Email"),
        validators=[DataRequired(), Length(max=254)],
        filters=[_strip],
        render_kw={"autocomplete": "off", "autofocus": True},
    )


class UserForm(_UserFields):
    pass


class ConfirmForm(FlaskForm):
    """Only the CSRF token: for buttons that change something."""


def _password(label: Any, autocomplete: str = "new-password", **kw: Any) -> PasswordField:
    return PasswordField(
        label,
        validators=[DataRequired(), Length(max=MAX_LENGTH)],
        render_kw={"autocomplete": autocomplete, **kw},
    )


NEW_PASSWORD_HELP = _l(
    "At least %(n)s characters. A few unrelated words make a good password.", n=MIN_LENGTH
)


class NewPasswordForm(FlaskForm):
    password = _password(_l("New password"), autofocus=True)
    confirm = _password(_l("New password again"))


class ChangePasswordForm(FlaskForm):
    current_password = _password(_l("Current password"), autocomplete="current-password")
    password = _password(_l("New password"))
    confirm = _password(_l("New password again"))


class ForgotPasswordForm(FlaskForm):
    email = EmailField(
        _l("Email"),
        validators=[DataRequired(), Length(max=254)],
        filters=[_strip],
        render_kw={"autocomplete": "username", "autofocus": True},
    )


class RoleForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(), Length(max=64)],
        filters=[_strip],
        render_kw={"maxlength": 64},
    )
    permissions = SelectMultipleField(
        _l("Permissions"), choices=options((p.value, p.value) for p in Permission)
    )
    client_scope = RadioField(
        _l("Clients this role reaches"),
        choices=options(SCOPE_LABELS.items()),
        default=ClientScope.OWN.value,
        validators=[DataRequired()],
    )
    require_2fa = BooleanField(_l("Require two-factor authentication"))


class TeamForm(FlaskForm):
    name = StringField(
        _l("Team name"),
        validators=[DataRequired(), Length(max=100)],
        filters=[_strip],
        render_kw={"maxlength": 100},
    )
