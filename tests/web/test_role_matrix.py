"""Role by route: what each shipped role may open, checked over HTTP.

Two parts: a sweep over the whole URL map (every route that needs a permission answers
403 to every shipped role without it, and never 403 to a role with it), and a table,
written out by hand, of what each role can do on the main pages, so a change to the
shipped roles or to a route's permission shows up as a diff someone has to read.
"""

from __future__ import annotations

import re

import pytest

from crm.auth.permissions import SHIPPED_ROLES
from crm.web.access import declared_access
from tests.conftest import login, make_client, make_user

ROLES = [name for name, _scope, _perms in SHIPPED_ROLES]
GRANTS = {name: {p.value for p in perms} for name, _scope, perms in SHIPPED_ROLES}


def _concrete(path: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "1" if "id" in m.group(1) else "x", path)


def _signed_in(client, app, role: str) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        user_id = make_user(f"{role}@example.com", role=role, name=role.title()).id
    login(client, f"{role}@example.com")
    return user_id


@pytest.mark.parametrize("role", ROLES)
def test_every_route_enforces_its_declared_permission(client, app, role: str):
    _signed_in(client, app, role)
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        declared = declared_access(app.view_functions[rule.endpoint])
        if declared == "public" or not declared:
            continue
        allowed = all(p.value in GRANTS[role] for p in declared)
        path = _concrete(rule.rule)
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        if allowed:
            # Only GET for allowed routes: a POST would change data.
            methods = [m for m in methods if m == "GET"]
        for method in methods:
            response = client.open(path, method=method)
            if allowed:
                assert response.status_code != 403, (role, method, path)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
            checked += 1
    assert checked > 0


# What each role gets on the main pages: 200 opens, 403 refused.
MATRIX: list[tuple[str, dict[str, int]]] = [
    ("/clients/", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
    ("/clients/new", {"admin": 200, "manager": 200, "sales": 200, "readonly": 403}),
    ("/clients/{client}", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
    ("/clients/{client}/edit", {"admin": 200, "manager": 200, "sales": 200, "readonly": 403}),
    ("/clients/{client}/delete", {"admin": 200, "manager": 200, "sales": 403, "readonly": 403}),
    ("/tasks/", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
    ("/deals/", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
    ("/deals/stages", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/campaigns/", {"admin": 200, "manager": 200, "sales": 403, "readonly": 403}),
    ("/campaigns/new", {"admin": 200, "manager": 200, "sales": 403, "readonly": 403}),
    ("/admin/fields/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/admin/organisation/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/admin/network/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/admin/audit/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/admin/users/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/admin/lists/", {"admin": 200, "manager": 200, "sales": 403, "readonly": 403}),
    ("/admin/lists/new", {"admin": 200, "manager": 200, "sales": 403, "readonly": 403}),
    ("/admin/lists/import", {"admin": 200, "manager": 200, "sales": 403, "readonly": 403}),
    ("/clients/{client}/lists", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
    ("/admin/roles/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/admin/teams/", {"admin": 200, "manager": 403, "sales": 403, "readonly": 403}),
    ("/account", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
    ("/account/2fa", {"admin": 200, "manager": 200, "sales": 200, "readonly": 200}),
]


@pytest.mark.parametrize("role", ROLES)
def test_main_pages_per_role(client, app, role: str):
    user_id = _signed_in(client, app, role)
    with app.app_context():
        # Owned by the user, so the sales scope (own and team) reaches it.
        client_id = make_client(last_name="Dvořák", owner_id=user_id).id
    for path, expected in MATRIX:
        url = path.format(client=client_id)
        status = client.get(url).status_code
        assert status == expected[role], (role, url, status)
