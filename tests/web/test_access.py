"""Every route declares its access; anonymous users reach only public routes."""

from __future__ import annotations

import re

from crm.web.access import declared_access
from tests.conftest import login, make_user


def _routes(app):  # type: ignore[no-untyped-def]
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        yield rule, app.view_functions[rule.endpoint]


def test_every_route_declares_what_it_needs(app):
    undeclared = [rule.rule for rule, view in _routes(app) if declared_access(view) is None]
    assert undeclared == []


def _concrete(path: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "1" if "id" in m.group(1) else "x", path)


def test_anonymous_requests_to_non_public_routes_go_to_login(client, app):
    public = {"/login", "/healthz"}
    for rule, view in _routes(app):
        path = _concrete(rule.rule)
        if declared_access(view) == "public":
            public.discard(rule.rule)
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            assert response.status_code == 302, (method, path, response.status_code)
            assert response.headers["Location"].startswith("/login")
    assert public == set(), "the public routes changed; review them"


def test_read_only_role_cannot_change_anything(client, app):
    with app.app_context():
        make_user("czytelnik@example.com", role="readonly")
    login(client, "czytelnik@example.com")
    assert client.get("/clients/").status_code == 200
    for path in ["/clients/new", "/clients/1/edit", "/admin/fields/", "/admin/organisation/"]:
        assert client.get(path).status_code == 403, path
    assert client.post("/clients/new", data={"last_name": "X"}).status_code == 403


def test_security_headers_and_vary(admin_client):
    response = admin_client.get("/clients/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "HX-Request" in response.headers["Vary"]
    assert response.headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_scripts(admin_client):
    body = admin_client.get("/clients/").get_data(as_text=True)
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body) is None


def test_not_found_and_forbidden_pages_are_friendly(admin_client):
    missing = admin_client.get("/clients/999999")
    assert missing.status_code == 404
    assert "There is nothing here" in missing.get_data(as_text=True)
    htmx = admin_client.get("/clients/999999/groups/email", headers={"HX-Request": "true"})
    assert htmx.status_code == 404 and htmx.headers["HX-Retarget"] == "#flash"


def test_health_check(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
