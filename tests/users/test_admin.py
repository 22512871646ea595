"""The user list and user page: pagination, edits with an audited diff, deactivation
(signs out, blocks sign-in), the self and last-manager guards, the 2FA reset link, and
that only users:manage reaches any of it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from crm.auth.models import Role, Team, User
from crm.auth.passwords import hash_password
from crm.auth.services import find_user
from crm.extensions import db
from crm.sqltypes import utcnow
from tests.conftest import TEST_PASSWORD, login, make_user
from tests.users.helpers import audit_entries, require_stub_broker, user_state


def _role(name: str) -> Role:
    return db.session.scalar(select(Role).where(Role.name == name))


def test_the_list_shows_role_team_2fa_status_and_last_sign_in(admin_client, app):
    with app.app_context():
        team = Team(name="Kraków")
        db.session.add(team)
        db.session.flush()
        ewa = make_user("ewa@example.com", role="sales", name="Ewa Nováková")
        ewa.team_id = team.id
        ewa.totp_enabled_at = utcnow()
        gone = make_user("gone@example.com", role="readonly", name="Günter Gone")
        gone.active = False
        db.session.commit()
    html = admin_client.get("/admin/users/").get_data(as_text=True)
    row = re.search(r"<tr>\s*<td><a [^>]*>Ewa Nováková</a>.*?</tr>", html, re.S).group(0)
    assert "ewa@example.com" in row and "sales" in row and "Kraków" in row
    assert ">on<" in row and ">active<" in row and "never" in row
    gone_row = re.search(r"<tr class=\"muted\">.*?Günter Gone.*?</tr>", html, re.S).group(0)
    assert "deactivated" in gone_row
    admin_row = re.search(r"<tr>\s*<td><a [^>]*>Ada Admin</a>.*?</tr>", html, re.S).group(0)
    assert "never" not in admin_row  # signed in just now


def test_the_list_pages(admin_client, app):
    with app.app_context():
        role_id = _role("readonly").id
        stored = hash_password(TEST_PASSWORD)  # one hash for all: hashing is slow on purpose
        db.session.add_all(
            User(
                email=f"u{i:02}@example.com",
                full_name=f"User {i:02}",
                password_hash=stored,
                role_id=role_id,
            )
            for i in range(60)
        )
        db.session.commit()
    first = admin_client.get("/admin/users/").get_data(as_text=True)
    assert "61 users" in first and "Page 1 of 2" in first and "User 48" in first
    assert "User 49" not in first
    second = admin_client.get("/admin/users/?page=2").get_data(as_text=True)
    assert "User 49" in second and "User 59" in second and "Page 2 of 2" in second
    beyond = admin_client.get("/admin/users/?page=99").get_data(as_text=True)
    assert "User 59" in beyond and "No users yet" not in beyond
    htmx = admin_client.get("/admin/users/?page=2", headers={"HX-Request": "true"})
    assert "<html" not in htmx.get_data(as_text=True)


def test_editing_a_user_records_a_diff(admin_client, app):
    with app.app_context():
        team_id = Team(name="Brno")
        db.session.add(team_id)
        db.session.commit()
        team_id = team_id.id
        user_id = make_user("jan@example.com", role="sales", name="Jan").id
        manager_id = _role("manager").id
    page = admin_client.get(f"/admin/users/{user_id}")
    assert page.status_code == 200 and 'value="Jan"' in page.get_data(as_text=True)
    response = admin_client.post(
        f"/admin/users/{user_id}",
        data={"full_name": "  Jan   Dvořák ", "role_id": manager_id, "team_id": team_id},
    )
    assert response.status_code == 302
    with app.app_context():
        user = db.session.get(User, user_id)
        assert (user.full_name, user.role.name, user.team.name) == ("Jan Dvořák", "manager", "Brno")
    [entry] = audit_entries(app, "user_updated")
    assert entry.target_id == user_id
    assert entry.details["changes"] == {
        "full_name": ["Jan", "Jan Dvořák"],
        "role": ["sales", "manager"],
        "team": [None, "Brno"],
    }
    # Saving without changes records nothing; bad input is refused without a 500.
    admin_client.post(
        f"/admin/users/{user_id}",
        data={"full_name": "Jan Dvořák", "role_id": manager_id, "team_id": team_id},
    )
    assert len(audit_entries(app, "user_updated")) == 1
    bad = admin_client.post(f"/admin/users/{user_id}", data={"full_name": "x", "role_id": "999"})
    assert bad.status_code == 422
    assert admin_client.get("/admin/users/98765").status_code == 404


def test_deactivation_signs_out_blocks_sign_in_and_reactivation_restores(admin_client, app):
    with app.app_context():
        user_id = make_user("ola@example.com", role="sales", name="Ola").id
    ola = app.test_client()
    login(ola, "ola@example.com")
    confirm = admin_client.get(f"/admin/users/{user_id}/deactivate")
    assert confirm.status_code == 200
    assert "signed out at once" in confirm.get_data(as_text=True)
    assert ola.get("/clients/").status_code == 200  # the confirmation page changed nothing

    assert admin_client.post(f"/admin/users/{user_id}/deactivate").status_code == 302
    assert ola.get("/clients/").status_code == 302
    refused = app.test_client().post(
        "/login", data={"email": "ola@example.com", "password": TEST_PASSWORD}
    )
    assert refused.status_code == 200 and "Wrong email or password" in refused.get_data(True)
    assert not user_state(app, "ola@example.com").active
    assert "deactivated" in admin_client.get("/admin/users/").get_data(as_text=True)

    assert admin_client.post(f"/admin/users/{user_id}/reactivate").status_code == 302
    login(app.test_client(), "ola@example.com")
    assert [e.target_id for e in audit_entries(app, "user_deactivated")] == [user_id]
    assert [e.target_id for e in audit_entries(app, "user_reactivated")] == [user_id]


def test_an_admin_cannot_deactivate_themselves(admin_client, app):
    admin_id = user_state(app, "admin@example.com").id
    page = admin_client.get(f"/admin/users/{admin_id}")
    assert "You cannot deactivate your own account." in page.get_data(as_text=True)
    response = admin_client.post(f"/admin/users/{admin_id}/deactivate")
    assert response.status_code == 409
    assert user_state(app, "admin@example.com").active


def test_the_last_user_manager_cannot_lose_the_permission(admin_client, app):
    admin_id = user_state(app, "admin@example.com").id
    with app.app_context():
        sales_id = _role("sales").id
        # An invited admin who never chose a password does not count.
        invited = make_user("invited@example.com", role="admin", name="Invited")
        invited.password_hash = "!never-set"
        db.session.commit()
    response = admin_client.post(
        f"/admin/users/{admin_id}", data={"full_name": "Ada", "role_id": sales_id}
    )
    assert response.status_code == 409
    assert "no active user who can manage users" in response.get_data(as_text=True)
    with app.app_context():
        assert find_user("admin@example.com").role.name == "admin"

    # With a second active admin, the first may step down and be deactivated.
    with app.app_context():
        second = make_user("second@example.com", role="admin", name="Second").id
    other = app.test_client()
    login(other, "second@example.com")
    assert (
        other.post(
            f"/admin/users/{admin_id}", data={"full_name": "Ada", "role_id": sales_id}
        ).status_code
        == 302
    )
    assert admin_client.get("/admin/users/").status_code == 403  # Ada is sales now
    # Now the second admin is the last one who can manage users: they cannot step down.
    refused = other.post(
        f"/admin/users/{second}", data={"full_name": "Second", "role_id": sales_id}
    )
    assert refused.status_code == 409
    assert user_state(app, "second@example.com").role_id != sales_id


def test_the_reset_2fa_link_appears_only_when_the_endpoint_exists(admin_client, app, monkeypatch):
    if "auth.admin_reset_2fa" not in app.view_functions:
        pytest.skip("the 2FA reset page is not part of this build yet")
    with app.app_context():
        user = make_user("ewa@example.com", role="sales", name="Ewa")
        user.totp_enabled_at = utcnow()
        db.session.commit()
        user_id = user.id
    link = f'href="/admin/users/{user_id}/2fa/reset"'
    assert link in admin_client.get(f"/admin/users/{user_id}").get_data(as_text=True)
    monkeypatch.delitem(app.view_functions, "auth.admin_reset_2fa")
    page = admin_client.get(f"/admin/users/{user_id}")
    assert page.status_code == 200 and "2fa/reset" not in page.get_data(as_text=True)


def test_resending_an_invitation_to_someone_with_a_password_is_refused(admin_client, app):
    require_stub_broker()
    with app.app_context():
        user_id = make_user("ola@example.com", role="sales", name="Ola").id
    response = admin_client.post(f"/admin/users/{user_id}/invite", follow_redirects=True)
    assert "has chosen a password already" in response.get_data(as_text=True)
    assert audit_entries(app, "user_invited") == []


ADMIN_PATHS = {
    "/admin/users/",
    "/admin/users/invite",
    "/admin/users/1",
    "/admin/users/1/deactivate",
    "/admin/users/1/reactivate",
    "/admin/users/1/invite",
    "/admin/users/1/reset",
    "/admin/roles/",
    "/admin/roles/new",
    "/admin/roles/1",
    "/admin/roles/1/delete",
    "/admin/teams/",
    "/admin/teams/1",
    "/admin/teams/1/delete",
}


def _admin_routes(app):  # type: ignore[no-untyped-def]
    """(path with ids filled in, method) of every admin route of the users package."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("users.") and rule.rule.startswith("/admin/"):
            path = re.sub(r"<int:\w+>", "1", rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield path, method


def test_every_admin_route_of_this_package_is_listed(app):
    assert {path for path, _method in _admin_routes(app)} == ADMIN_PATHS


@pytest.mark.parametrize("role", ["manager", "sales", "readonly"])
def test_roles_without_users_manage_get_403_everywhere(app, client, role):
    with app.app_context():
        make_user(f"{role}@example.com", role=role, name=role.title())
    login(client, f"{role}@example.com")
    routes = list(_admin_routes(app))
    assert len(routes) > len(ADMIN_PATHS)  # GET and POST
    for path, method in routes:
        response = client.open(path, method=method)
        assert response.status_code == 403, (method, path, response.status_code)
    assert client.get("/account").status_code == 200
