"""Users, roles and teams (admin pages), invitation and password-reset links (public),
and the signed-in user's own account page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.routing import BuildError

from crm.audit.services import changes_details
from crm.audit.services import record as audit
from crm.auth.idle import mark_active
from crm.auth.models import Role, Team, User
from crm.auth.passwords import password_problem, verify_password
from crm.auth.permissions import Permission
from crm.auth.services import AccountError
from crm.extensions import db
from crm.security import services as security
from crm.security.models import AllowedNetwork
from crm.sqltypes import utcnow
from crm.users import services
from crm.users.forms import (
    NEW_PASSWORD_HELP,
    PERMISSION_HELP,
    PERMISSION_LABELS,
    SCOPE_LABELS,
    ChangePasswordForm,
    ConfirmForm,
    ForgotPasswordForm,
    InviteForm,
    NewPasswordForm,
    RoleForm,
    TeamForm,
    UserForm,
    permission_groups,
    role_options,
    team_options,
)
from crm.users.models import AccountToken
from crm.web.access import login_only, public, requires
from crm.web.client_ip import client_ip
from crm.web.pagination import page_number, paginate
from crm.web.render import render

bp = Blueprint("users", __name__, template_folder="templates")

PER_PAGE = 50
RESET_2FA_ENDPOINT = "auth.admin_reset_2fa"
ACCOUNT_2FA_ENDPOINT = "auth.account_2fa"


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[no-any-return]


def _get(model: Any, object_id: int) -> Any:
    row = db.session.get(model, object_id)
    if row is None:
        abort(404)
    return row


# --- users -----------------------------------------------------------------------------


@bp.route("/admin/users/")
@requires(Permission.USERS_MANAGE)
def index() -> ResponseReturnValue:
    query = services.users_query().options(selectinload(User.role), selectinload(User.team))
    page = paginate(query, page_number(), PER_PAGE)
    if not page.items and page.page > page.pages:
        page = paginate(query, page.pages, PER_PAGE)  # past the end: show the last page
    return render(
        "users/index.html",
        "users/_table.html",
        users=page,
        is_pending=services.is_pending,
    )


def _fill_choices(form: InviteForm | UserForm) -> None:
    form.role_id.choices = role_options(services.all_roles())
    form.team_id.choices = team_options(services.all_teams())


def _user_spec(form: InviteForm | UserForm) -> services.UserSpec:
    role = _get(Role, int(form.role_id.data))
    team = db.session.get(Team, int(form.team_id.data)) if form.team_id.data else None
    return services.UserSpec(full_name=form.full_name.data or "", role=role, team=team)


@bp.route("/admin/users/invite", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def invite() -> ResponseReturnValue:
    form = InviteForm()
    _fill_choices(form)
    if request.method == "GET":
        # The least-privileged shipped role first, so a slip does not make an admin.
        sales = next((c for c in form.role_id.choices if c.label == "sales"), None)
        form.role_id.data = sales.value if sales else None
    if form.validate_on_submit():
        spec = _user_spec(form)
        try:
            user, raw = services.invite_user(form.email.data or "", spec, _me())
        except AccountError as exc:
            db.session.rollback()
            form.email.errors = [*form.email.errors, str(exc)]
        else:
            audit(
                "user_invited",
                target_type="user",
                target_id=user.id,
                details={
                    "email": user.email,
                    "full_name": user.full_name,
                    "role": spec.role.name,
                    "team": spec.team.name if spec.team else None,
                },
            )
            services.send_invitation(user, raw, _me())
            db.session.commit()
            flash(_("Invitation sent to %(email)s.", email=user.email), "success")
            return redirect(url_for("users.edit", user_id=user.id))
    status = 422 if form.errors else 200
    return render("users/invite.html", form=form, status=status)


def _reset_2fa_action(user: User) -> tuple[str, bool] | None:
    """(url, is_get) of the 2FA reset page, when the auth package provides one."""
    if RESET_2FA_ENDPOINT not in current_app.view_functions:
        return None
    try:
        url = url_for(RESET_2FA_ENDPOINT, user_id=user.id)
    except BuildError:
        return None
    rules = current_app.url_map.iter_rules(RESET_2FA_ENDPOINT)
    return url, any("GET" in (rule.methods or ()) for rule in rules)


def _user_page(user: User, form: UserForm, status: int = 200) -> ResponseReturnValue:
    return render(
        "users/edit.html",
        status=status,
        user=user,
        form=form,
        pending=services.is_pending(user),
        deactivation_problem=services.deactivation_problem(user, _me()) if user.active else None,
        reset_2fa=_reset_2fa_action(user),
        action_form=ConfirmForm(formdata=None),
    )


@bp.route("/admin/users/<int:user_id>", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def edit(user_id: int) -> ResponseReturnValue:
    user: User = _get(User, user_id)
    form = UserForm()
    _fill_choices(form)
    if request.method == "GET":
        form.full_name.data = user.full_name
        form.role_id.data = str(user.role_id)
        form.team_id.data = str(user.team_id or "")
    if form.validate_on_submit():
        try:
            changes = services.update_user(user, _user_spec(form))
        except AccountError as exc:
            db.session.rollback()
            form.role_id.errors = [*form.role_id.errors, str(exc)]
            return _user_page(user, form, status=409)
        if changes:
            audit(
                "user_updated",
                target_type="user",
                target_id=user.id,
                details={"email": user.email, **changes_details(changes)},
            )
        db.session.commit()
        flash(_("%(name)s saved.", name=user.display_name), "success")
        return redirect(url_for("users.edit", user_id=user.id))
    return _user_page(user, form, status=422 if form.errors else 200)


@bp.route("/admin/users/<int:user_id>/deactivate", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def deactivate(user_id: int) -> ResponseReturnValue:
    user: User = _get(User, user_id)
    if not user.active:
        flash(_("%(name)s is deactivated already.", name=user.display_name), "info")
        return redirect(url_for("users.edit", user_id=user.id))
    problem = services.deactivation_problem(user, _me())
    form = ConfirmForm()
    if request.method == "POST" and problem is None and form.validate_on_submit():
        services.deactivate_user(user, _me())
        audit(
            "user_deactivated", target_type="user", target_id=user.id, details={"email": user.email}
        )
        db.session.commit()
        flash(
            _("%(name)s is deactivated and was signed out everywhere.", name=user.display_name),
            "success",
        )
        return redirect(url_for("users.edit", user_id=user.id))
    status = 409 if request.method == "POST" else 200
    return render("users/deactivate.html", status=status, user=user, problem=problem, form=form)


@bp.route("/admin/users/<int:user_id>/reactivate", methods=["POST"])
@requires(Permission.USERS_MANAGE)
def reactivate(user_id: int) -> ResponseReturnValue:
    user: User = _get(User, user_id)
    if ConfirmForm().validate_on_submit() and not user.active:
        services.reactivate_user(user)
        audit(
            "user_reactivated", target_type="user", target_id=user.id, details={"email": user.email}
        )
        db.session.commit()
        flash(_("%(name)s can sign in again.", name=user.display_name), "success")
    return redirect(url_for("users.edit", user_id=user.id))


@bp.route("/admin/users/<int:user_id>/invite", methods=["POST"])
@requires(Permission.USERS_MANAGE)
def resend_invite(user_id: int) -> ResponseReturnValue:
    user: User = _get(User, user_id)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        raw = services.resend_invitation(user, _me())
    except AccountError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("users.edit", user_id=user.id))
    audit(
        "user_invited",
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "resent": True},
    )
    services.send_invitation(user, raw, _me())
    db.session.commit()
    flash(
        _(
            "A new invitation went to %(email)s; the previous link no longer works.",
            email=user.email,
        ),
        "success",
    )
    return redirect(url_for("users.edit", user_id=user.id))


@bp.route("/admin/users/<int:user_id>/reset", methods=["POST"])
@requires(Permission.USERS_MANAGE)
def send_reset(user_id: int) -> ResponseReturnValue:
    user: User = _get(User, user_id)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        services.send_admin_reset(user, _me())
    except AccountError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("users.edit", user_id=user.id))
    audit(
        "password_reset_sent", target_type="user", target_id=user.id, details={"email": user.email}
    )
    db.session.commit()
    flash(
        _("A password reset link went to %(email)s; it works for one hour.", email=user.email),
        "success",
    )
    return redirect(url_for("users.edit", user_id=user.id))


# --- links from emails (public) --------------------------------------------------------


def _token_error(reason: str, purpose: str) -> ResponseReturnValue:
    messages = {
        "unknown": _("This link is not valid. It may be incomplete, or a newer link replaced it."),
        "used": _("This link was used already. Each link works once."),
        "expired": _("This link has expired."),
        "inactive": _("This account is deactivated. Ask your administrator."),
    }
    status = {"unknown": 404, "used": 410, "expired": 410, "inactive": 403}[reason]
    return render(
        "users/token_error.html",
        status=status,
        message=messages[reason],
        reason=reason,
        purpose=purpose,
    )


def _new_password_ok(form: NewPasswordForm | ChangePasswordForm, user: User) -> bool:
    """Both entries match and meet the rules; otherwise the errors sit on the fields."""
    password = form.password.data or ""
    if password != (form.confirm.data or ""):
        form.confirm.errors = [*form.confirm.errors, _("The two passwords differ.")]
        return False
    problem = password_problem(password, email=user.email, name=user.full_name)
    if problem is not None:
        form.password.errors = [*form.password.errors, problem]
        return False
    return True


def _sign_in_after_invite(user: User) -> bool:
    """Sign the new user in, unless their role needs 2FA (set up after a normal sign-in,
    which the login page leads through) or their network is not allowed."""
    if user.role.require_2fa or not security.ip_allowed(client_ip(), user.role_id):
        return False
    logout_user()
    login_user(user)
    mark_active()
    user.last_login_at = utcnow()
    audit("login", actor=user)
    return True


@bp.route("/invite/<token>", methods=["GET", "POST"])
@public
def accept_invite(token: str) -> ResponseReturnValue:
    try:
        row: AccountToken = services.redeemable_token(token, services.INVITE)
    except services.TokenError as exc:
        return _token_error(exc.reason, services.INVITE)
    user = row.user
    form = NewPasswordForm()
    if form.validate_on_submit() and _new_password_ok(form, user):
        services.accept_invitation(row, form.password.data or "")
        audit("invite_accepted", actor=user, target_type="user", target_id=user.id)
        signed_in = _sign_in_after_invite(user)
        db.session.commit()
        if signed_in:
            flash(_("Welcome, %(name)s! Your password is set.", name=user.display_name), "success")
            return redirect(url_for("web.home"))
        flash(_("Your password is set. Sign in to continue."), "success")
        return redirect(url_for("auth.login"))
    status = 422 if form.errors else 200
    return render(
        "users/set_password.html",
        status=status,
        form=form,
        user=user,
        invite=True,
        help=NEW_PASSWORD_HELP,
    )


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@public
def reset_password(token: str) -> ResponseReturnValue:
    try:
        row: AccountToken = services.redeemable_token(token, services.RESET)
    except services.TokenError as exc:
        return _token_error(exc.reason, services.RESET)
    user = row.user
    form = NewPasswordForm()
    if form.validate_on_submit() and _new_password_ok(form, user):
        services.complete_reset(row, form.password.data or "")
        audit(
            "password_changed",
            actor=user,
            target_type="user",
            target_id=user.id,
            details={"via": "reset"},
        )
        db.session.commit()
        if current_user.is_authenticated and current_user.id == user.id:
            logout_user()  # this browser's session ended with the others
        flash(_("Your password was changed. Sign in with the new one."), "success")
        return redirect(url_for("auth.login"))
    status = 422 if form.errors else 200
    return render(
        "users/set_password.html",
        status=status,
        form=form,
        user=user,
        invite=False,
        help=NEW_PASSWORD_HELP,
    )


@bp.route("/password/forgot", methods=["GET", "POST"])
@public
def forgot_password() -> ResponseReturnValue:
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        ip, email = client_ip(), (form.email.data or "").strip().lower()
        if services.reset_requests_throttled(ip, email):
            # Counted per address typed, whether or not it has an account: says nothing.
            form.email.errors = [_("Too many requests. Try again in an hour.")]
            return render("users/forgot.html", form=form, status=429)
        user = services.request_reset(ip, email)
        if user is not None:
            audit(
                "password_reset_sent",
                target_type="user",
                target_id=user.id,
                details={"email": user.email, "requested_by": "user"},
            )
        db.session.commit()
        # The same answer for every address, so the page does not reveal who has an account.
        return render("users/forgot.html", form=None, sent=True)
    status = 422 if form.errors else 200
    return render("users/forgot.html", form=form, status=status)


# --- the signed-in user's own account --------------------------------------------------


@bp.route("/account", methods=["GET", "POST"])
@login_only
def account() -> ResponseReturnValue:
    me = _me()
    form = ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        ip = client_ip()
        if security.login_throttled(ip, me.email):
            form.current_password.errors = [_("Too many attempts. Try again in a few minutes.")]
            status = 429
        elif not verify_password(me.password_hash, form.current_password.data or ""):
            # A wrong current password counts like a failed sign-in, so a borrowed
            # session cannot be used to guess it.
            security.record_login_attempt(ip, me.email, success=False)
            audit("password_change_failed", target_type="user", target_id=me.id)
            db.session.commit()
            form.current_password.errors = [_("The current password is wrong.")]
            status = 422
        elif _new_password_ok(form, me):
            services.change_password(me, form.password.data or "")
            audit("password_changed", target_type="user", target_id=me.id)
            db.session.commit()
            # The token rotated, which signed out every session; sign this one in again
            # so it carries the new token.
            login_user(me)
            mark_active()
            flash(_("Your password was changed. Your other sessions were signed out."), "success")
            return redirect(url_for("users.account"))
        else:
            status = 422
    elif form.errors:
        status = 422
    return render(
        "users/account.html",
        status=status,
        form=form,
        user=me,
        help=NEW_PASSWORD_HELP,
        # The 2FA pages live in crm.auth; link to them once they exist.
        twofa_url=url_for(ACCOUNT_2FA_ENDPOINT)
        if ACCOUNT_2FA_ENDPOINT in current_app.view_functions
        else None,
    )


# --- roles -----------------------------------------------------------------------------


@bp.route("/admin/roles/")
@requires(Permission.USERS_MANAGE)
def roles() -> ResponseReturnValue:
    return render(
        "users/roles.html",
        roles=services.all_roles(),
        members=services.member_counts(User.role_id),
        scope_labels=SCOPE_LABELS,
        shipped=services.SHIPPED_ROLE_NAMES,
    )


def _role_spec(form: RoleForm) -> services.RoleSpec:
    return services.RoleSpec(
        name=form.name.data or "",
        permissions=list(form.permissions.data or []),
        client_scope=form.client_scope.data or "",
        require_2fa=bool(form.require_2fa.data),
    )


def _role_page(form: RoleForm, role: Role | None, status: int = 200) -> ResponseReturnValue:
    return render(
        "users/role_form.html",
        status=status,
        form=form,
        role=role,
        groups=permission_groups(),
        labels=PERMISSION_LABELS,
        help=PERMISSION_HELP,
        granted=set(form.permissions.data or []),
        shipped=role is not None and role.name in services.SHIPPED_ROLE_NAMES,
    )


@bp.route("/admin/roles/new", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def create_role() -> ResponseReturnValue:
    form = RoleForm()
    if form.validate_on_submit():
        try:
            role = services.create_role(_role_spec(form))
        except AccountError as exc:
            db.session.rollback()
            _role_error(form, exc)
            return _role_page(form, None, status=422)
        audit(
            "role_created",
            target_type="role",
            target_id=role.id,
            details={
                "name": role.name,
                "added": list(role.permissions),
                "scope": role.client_scope,
                "require_2fa": role.require_2fa,
            },
        )
        db.session.commit()
        flash(_("Role “%(name)s” created.", name=role.name), "success")
        return redirect(url_for("users.roles"))
    return _role_page(form, None, status=422 if form.errors else 200)


@bp.route("/admin/roles/<int:role_id>", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def edit_role(role_id: int) -> ResponseReturnValue:
    role: Role = _get(Role, role_id)
    if request.method == "GET":
        form = RoleForm(
            formdata=None,
            data={
                "name": role.name,
                "permissions": list(role.permissions or []),
                "client_scope": role.client_scope,
                "require_2fa": role.require_2fa,
            },
        )
        return _role_page(form, role)
    form = RoleForm()
    if not form.validate():
        return _role_page(form, role, status=422)
    try:
        details = services.update_role(role, _role_spec(form))
    except AccountError as exc:
        db.session.rollback()
        _role_error(form, exc)
        return _role_page(form, role, status=409)
    changed = (
        details["added"]
        or details["removed"]
        or "name" in details
        or details["scope"][0] != details["scope"][1]
        or details["require_2fa"][0] != details["require_2fa"][1]
    )
    if changed:
        audit("role_updated", target_type="role", target_id=role.id, details=details)
    db.session.commit()
    flash(_("Role “%(name)s” saved.", name=role.name), "success")
    return redirect(url_for("users.roles"))


def _role_error(form: RoleForm, exc: AccountError) -> None:
    field = form.name if isinstance(exc, services.NameRefused) else form.permissions
    field.errors = [*field.errors, str(exc)]


@bp.route("/admin/roles/<int:role_id>/delete", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def delete_role(role_id: int) -> ResponseReturnValue:
    role: Role = _get(Role, role_id)
    problem = services.role_delete_problem(role)
    form = ConfirmForm()
    if request.method == "POST" and problem is None and form.validate_on_submit():
        name = role.name
        audit("role_deleted", target_type="role", target_id=role.id, details={"name": name})
        services.delete_role(role)
        db.session.commit()
        flash(_("Role “%(name)s” deleted.", name=name), "success")
        return redirect(url_for("users.roles"))
    ranges = db.session.scalar(
        select(func.count(AllowedNetwork.id)).where(AllowedNetwork.role_id == role.id)
    )
    return render(
        "users/role_delete.html",
        status=409 if request.method == "POST" else 200,
        role=role,
        problem=problem,
        ranges=ranges or 0,
        form=form,
    )


# --- teams -----------------------------------------------------------------------------


def _teams_page(form: TeamForm, status: int = 200) -> ResponseReturnValue:
    return render(
        "users/teams.html",
        status=status,
        form=form,
        teams=services.all_teams(),
        members=services.member_counts(User.team_id),
    )


@bp.route("/admin/teams/", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def teams() -> ResponseReturnValue:
    if request.method == "GET":
        return _teams_page(TeamForm(formdata=None))
    form = TeamForm()
    if form.validate():
        try:
            team = services.create_team(form.name.data or "")
        except AccountError as exc:
            db.session.rollback()
            form.name.errors = [*form.name.errors, str(exc)]
        else:
            audit(
                "team_created", target_type="team", target_id=team.id, details={"name": team.name}
            )
            db.session.commit()
            flash(_("Team “%(name)s” created.", name=team.name), "success")
            return redirect(url_for("users.teams"))
    return _teams_page(form, status=422)


@bp.route("/admin/teams/<int:team_id>", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def rename_team(team_id: int) -> ResponseReturnValue:
    team: Team = _get(Team, team_id)
    form = TeamForm(data={"name": team.name}) if request.method == "GET" else TeamForm()
    if request.method == "POST" and form.validate():
        try:
            old, new = services.rename_team(team, form.name.data or "")
        except AccountError as exc:
            db.session.rollback()
            form.name.errors = [*form.name.errors, str(exc)]
        else:
            if old != new:
                audit(
                    "team_renamed",
                    target_type="team",
                    target_id=team.id,
                    details={"name": [old, new]},
                )
            db.session.commit()
            flash(_("Team “%(name)s” saved.", name=new), "success")
            return redirect(url_for("users.teams"))
    status = 422 if form.errors else 200
    return render("users/team_form.html", status=status, form=form, team=team)


@bp.route("/admin/teams/<int:team_id>/delete", methods=["GET", "POST"])
@requires(Permission.USERS_MANAGE)
def delete_team(team_id: int) -> ResponseReturnValue:
    team: Team = _get(Team, team_id)
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        name = team.name
        audit("team_deleted", target_type="team", target_id=team.id, details={"name": name})
        members = services.delete_team(team)
        db.session.commit()
        flash(
            _("Team “%(name)s” deleted; %(n)s member(s) now have no team.", name=name, n=members),
            "success",
        )
        return redirect(url_for("users.teams"))
    members = services.member_counts(User.team_id).get(team.id, 0)
    return render("users/team_delete.html", team=team, members=members, form=form)
