"""Roles as a permission matrix: create, edit (audited diff), scope changes that take
effect at once, the last-manager guard, and deletion only of unused custom roles."""

from __future__ import annotations

from sqlalchemy import select

from crm.auth.models import Role, Team, User
from crm.auth.permissions import Permission
from crm.extensions import db
from crm.security.models import AllowedNetwork
from tests.conftest import login, make_client, make_user
from tests.users.helpers import audit_entries


def _role(app, name: str) -> Role:  # type: ignore[no-untyped-def]
    with app.app_context():
        role = db.session.scalar(select(Role).where(Role.name == name))
        db.session.expunge(role)
        return role


def _form(role: Role, **changes):  # type: ignore[no-untyped-def]
    data = {
        "name": role.name,
        "permissions": list(role.permissions),
        "client_scope": role.client_scope,
    }
    if role.require_2fa:
        data["require_2fa"] = "y"
    data.update(changes)
    return data


def test_the_roles_page_lists_scope_2fa_and_members(admin_client, app):
    with app.app_context():
        make_user("s1@example.com", role="sales", name="S1")
        make_user("s2@example.com", role="sales", name="S2")
    html = admin_client.get("/admin/roles/").get_data(as_text=True)
    for name in ("admin", "manager", "sales", "readonly"):
        assert f">{name}</a>" in html
    assert "Clients of their team" in html and "All clients" in html
    assert '<td class="num">2</td>' in html  # two sales users


def test_create_and_edit_a_role_round_trip(admin_client, app):
    page = admin_client.get("/admin/roles/new").get_data(as_text=True)
    for label in (
        "Export",
        "Erase",
        "Send campaigns",
        "Manage fields",
        "Manage users and roles",
        "View the audit log",
    ):
        assert label in page
    assert "right to erasure" in page  # a description of a special permission
    created = admin_client.post(
        "/admin/roles/new",
        data={
            "name": "Recepcja Łódź",
            "permissions": ["clients:view", "tasks:view", "clients:export"],
            "client_scope": "own",
            "require_2fa": "y",
        },
    )
    assert created.status_code == 302
    role = _role(app, "Recepcja Łódź")
    # Stored in the enum's order, whatever the order of the checkboxes.
    assert role.permissions == ["clients:view", "clients:export", "tasks:view"]
    assert role.client_scope == "own" and role.require_2fa
    [entry] = audit_entries(app, "role_created")
    assert entry.details["name"] == "Recepcja Łódź"

    edit = admin_client.get(f"/admin/roles/{role.id}").get_data(as_text=True)
    assert 'value="clients:export" checked' in edit
    assert 'value="clients:edit">' in edit  # unticked
    assert (
        'checked id="client_scope-0" name="client_scope" required type="radio" value="own"' in edit
    )
    assert 'checked id="require_2fa" name="require_2fa" role="switch"' in edit
    saved = admin_client.post(
        f"/admin/roles/{role.id}",
        data={
            "name": "Recepcja",
            "permissions": ["clients:view", "clients:edit", "tasks:view"],
            "client_scope": "team",
        },
    )
    assert saved.status_code == 302
    role = _role(app, "Recepcja")
    assert role.permissions == ["clients:view", "clients:edit", "tasks:view"]
    assert role.client_scope == "team" and not role.require_2fa
    [entry] = audit_entries(app, "role_updated")
    assert entry.target_id == role.id
    assert entry.details == {
        "added": ["clients:edit"],
        "removed": ["clients:export"],
        "scope": ["own", "team"],
        "require_2fa": [True, False],
        "name": ["Recepcja Łódź", "Recepcja"],
    }


def test_bad_role_input_is_refused_next_to_the_field(admin_client, app):
    duplicate = admin_client.post(
        "/admin/roles/new", data={"name": "SALES", "permissions": [], "client_scope": "own"}
    )
    assert duplicate.status_code == 422
    assert "exists already" in duplicate.get_data(as_text=True)
    unknown = admin_client.post(
        "/admin/roles/new",
        data={"name": "X", "permissions": ["clients:fly"], "client_scope": "everyone"},
    )
    assert unknown.status_code == 422
    sales = _role(app, "sales")
    renamed = admin_client.post(f"/admin/roles/{sales.id}", data=_form(sales, name="Vertrieb"))
    assert renamed.status_code == 409
    assert "keep their names" in renamed.get_data(as_text=True)
    assert _role(app, "sales").name == "sales"


def test_a_scope_change_takes_effect_at_once(admin_client, app):
    with app.app_context():
        team = Team(name="Warszawa")
        db.session.add(team)
        db.session.flush()
        kasia = make_user("kasia@example.com", role="sales", name="Kasia")
        tomek = make_user("tomek@example.com", role="sales", name="Tomek")
        kasia.team_id = tomek.team_id = team.id
        db.session.commit()
        make_client(first_name="Zdzisław", last_name="Teammate-Client", owner_id=tomek.id)
    browser = app.test_client()
    login(browser, "kasia@example.com")
    assert "Teammate-Client" in browser.get("/clients/").get_data(as_text=True)

    sales = _role(app, "sales")
    response = admin_client.post(f"/admin/roles/{sales.id}", data=_form(sales, client_scope="own"))
    assert response.status_code == 302
    assert "Teammate-Client" not in browser.get("/clients/").get_data(as_text=True)
    [entry] = audit_entries(app, "role_updated")
    assert entry.details["scope"] == ["team", "own"]
    assert entry.details["added"] == [] and entry.details["removed"] == []


def test_removing_users_manage_from_the_last_managing_role_is_refused(admin_client, app):
    admin_role = _role(app, "admin")
    kept = [p for p in admin_role.permissions if p != Permission.USERS_MANAGE.value]
    response = admin_client.post(
        f"/admin/roles/{admin_role.id}", data=_form(admin_role, permissions=kept)
    )
    assert response.status_code == 409
    assert "no active user who can manage users" in response.get_data(as_text=True)
    assert Permission.USERS_MANAGE.value in _role(app, "admin").permissions
    assert audit_entries(app, "role_updated") == []
    # Another active manager elsewhere makes it possible.
    with app.app_context():
        manager = db.session.scalar(select(Role).where(Role.name == "manager"))
        manager.permissions = [*manager.permissions, Permission.USERS_MANAGE.value]
        make_user("boss@example.com", role="manager", name="Boss")
    allowed = admin_client.post(
        f"/admin/roles/{admin_role.id}", data=_form(admin_role, permissions=kept)
    )
    assert allowed.status_code == 302


def test_role_deletion_only_when_unused_and_not_built_in(admin_client, app):
    admin_client.post(
        "/admin/roles/new",
        data={"name": "Praktikant", "permissions": ["clients:view"], "client_scope": "own"},
    )
    role = _role(app, "Praktikant")
    with app.app_context():
        user_id = make_user("intern@example.com", role="Praktikant", name="Intern").id
        db.session.add(AllowedNetwork(cidr="192.0.2.0/24", role_id=role.id))
        db.session.commit()
    in_use = admin_client.post(f"/admin/roles/{role.id}/delete")
    assert in_use.status_code == 409
    assert "1 user(s) have this role" in in_use.get_data(as_text=True)
    with app.app_context():
        user = db.session.get(User, user_id)
        user.role_id = db.session.scalar(select(Role.id).where(Role.name == "readonly"))
        db.session.commit()
    confirm = admin_client.get(f"/admin/roles/{role.id}/delete").get_data(as_text=True)
    assert "1 network range(s)" in confirm
    assert admin_client.post(f"/admin/roles/{role.id}/delete").status_code == 302
    with app.app_context():
        assert db.session.get(Role, role.id) is None
        assert db.session.scalar(select(AllowedNetwork)) is None
    assert audit_entries(app, "role_deleted")[0].details == {"name": "Praktikant"}

    readonly = _role(app, "readonly")
    with app.app_context():
        db.session.delete(db.session.get(User, user_id))
        db.session.commit()
    built_in = admin_client.post(f"/admin/roles/{readonly.id}/delete")
    assert built_in.status_code == 409 and "cannot be deleted" in built_in.get_data(as_text=True)
    assert admin_client.get("/admin/roles/4242").status_code == 404
