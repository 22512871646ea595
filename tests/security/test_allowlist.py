"""The IP allow-list: at login, on every request, its admin page and its CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.security import services
from crm.security.models import AllowedNetwork
from tests.conftest import TEST_PASSWORD, login, make_user


def _allow(app, cidr: str, role: str | None = None, note: str = "") -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        services.add_network(cidr, services.find_role(role) if role else None, note)
        db.session.commit()


def _from(client, ip: str):  # type: ignore[no-untyped-def]
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def _sign_in(client, email: str = "admin@example.com", **kw):  # type: ignore[no-untyped-def]
    return client.post("/login", data={"email": email, "password": TEST_PASSWORD}, **kw)


def _signed_in(client) -> bool:  # type: ignore[no-untyped-def]
    return client.get("/clients/").status_code == 200


# --- rules ------------------------------------------------------------------------


def test_ranges_are_normalised():
    assert str(services.parse_network(" 192.0.2.77/24 ")) == "192.0.2.0/24"
    assert str(services.parse_network("198.51.100.7")) == "198.51.100.7/32"
    assert str(services.parse_network("2001:DB8::1/32")) == "2001:db8::/32"
    assert str(services.parse_network("::ffff:192.0.2.0/120")) == "192.0.2.0/24"
    with pytest.raises(services.NetworkError, match="not an IP address or CIDR range"):
        services.parse_network("192.0.2.0/33")


def test_rules_global_and_per_role():
    rules = services.rules_from([])
    assert rules.allows("203.0.113.9", None)  # empty list: everyone
    rules = services.rules_from(
        [("192.0.2.0/24", None), ("2001:db8::/32", None), ("192.0.2.128/25", 7)]
    )
    assert rules.allows("192.0.2.5", 1)
    assert rules.allows("::ffff:192.0.2.5", 1)
    assert rules.allows("2001:db8:1::9", 1)
    assert not rules.allows("2001:db9::1", 1)
    assert not rules.allows("198.51.100.1", 1)
    assert not rules.allows("not an address", 1)
    # Role 7 must be inside its own list as well as the global one.
    assert not rules.allows("192.0.2.5", 7)
    assert rules.allows("192.0.2.200", 7)


# --- at login -----------------------------------------------------------------------


def test_empty_list_allows_every_address(client, admin):
    assert _sign_in(_from(client, "203.0.113.50")).status_code == 302


def test_login_from_outside_the_list_is_refused_with_the_generic_message(client, app, admin):
    _allow(app, "192.0.2.0/24")
    response = _sign_in(_from(client, "198.51.100.9"))
    assert response.status_code == 200
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert not _signed_in(client)
    assert _sign_in(_from(client, "192.0.2.10")).status_code == 302
    assert _signed_in(client)


def test_spoofed_forwarded_for_through_an_untrusted_peer_is_refused(client, app, admin):
    _allow(app, "192.0.2.0/24")
    spoofed = {"X-Forwarded-For": "192.0.2.10"}
    response = _sign_in(_from(client, "198.51.100.9"), headers=spoofed)
    assert response.status_code == 200 and not _signed_in(client)


def test_forwarded_for_through_a_trusted_proxy_is_honoured(client, app, admin, monkeypatch):
    monkeypatch.setitem(app.config, "CRM_TRUSTED_PROXIES", ["10.0.0.0/8"])
    _allow(app, "192.0.2.0/24")
    _from(client, "10.1.2.3")
    # The proxy appended the real address; what the client wrote further left is ignored.
    outside = {"X-Forwarded-For": "192.0.2.10, 198.51.100.9"}
    assert _sign_in(client, headers=outside).status_code == 200
    assert _sign_in(client, headers={"X-Forwarded-For": "192.0.2.10"}).status_code == 302
    assert client.get("/clients/", headers={"X-Forwarded-For": "192.0.2.10"}).status_code == 200


def test_ipv6_ranges(client, app, admin):
    _allow(app, "2001:db8:abcd::/48")
    assert _sign_in(_from(client, "2001:db8:ffff::1")).status_code == 200
    assert _sign_in(_from(client, "2001:db8:abcd:12::1")).status_code == 302
    assert _signed_in(client)


def test_ipv4_mapped_peer_matches_an_ipv4_range(client, app, admin):
    _allow(app, "192.0.2.0/24")
    assert _sign_in(_from(client, "::ffff:192.0.2.44")).status_code == 302


def test_per_role_lists(client, app, admin):
    with app.app_context():
        make_user("sprzedawca@example.com", role="sales", name="Sam Sales")
    _allow(app, "198.51.100.0/24", role="sales", note="office")
    sales = app.test_client()
    assert _sign_in(_from(sales, "203.0.113.1"), "sprzedawca@example.com").status_code == 200
    assert _sign_in(_from(sales, "198.51.100.5"), "sprzedawca@example.com").status_code == 302
    # Other roles are not limited by the sales list.
    assert _sign_in(_from(client, "203.0.113.1")).status_code == 302


# --- on every request ---------------------------------------------------------------


def test_signed_in_user_outside_a_new_range_is_signed_out(client, app, admin):
    login(_from(client, "198.51.100.9"), "admin@example.com")
    assert _signed_in(client)
    _allow(app, "192.0.2.0/24")  # applies at once, to sessions that exist already
    response = client.get("/clients/")
    assert response.status_code == 403
    assert "Your network is not allowed" in response.get_data(as_text=True)
    response = client.get("/clients/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_htmx_request_outside_the_list_gets_a_redirect_to_login(client, app, admin):
    login(_from(client, "198.51.100.9"), "admin@example.com")
    _allow(app, "192.0.2.0/24")
    response = client.get("/clients/", headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert response.headers["HX-Redirect"] == "/login"
    assert "Your network is not allowed" in response.get_data(as_text=True)
    assert not _signed_in(client)


# --- the admin page -------------------------------------------------------------------


def test_admin_page_lists_adds_and_removes(admin_client, app):
    _allow(app, "192.0.2.0/24", role="readonly", note="head office")
    page = admin_client.get("/admin/network/")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "192.0.2.0/24" in text and "head office" in text and "Role: readonly" in text
    assert "hx-confirm" in text
    assert "127.0.0.1" in text  # the admin's own address is shown
    with app.app_context():
        sales_id = services.find_role("sales").id
    response = admin_client.post(
        "/admin/network/", data={"cidr": "2001:db8::/32", "role": str(sales_id), "note": "VPN"}
    )
    assert response.status_code == 302
    with app.app_context():
        row = db.session.scalar(select(AllowedNetwork).where(AllowedNetwork.role_id == sales_id))
        assert (row.cidr, row.note) == ("2001:db8::/32", "VPN")
        row_id = row.id
    assert admin_client.post(f"/admin/network/{row_id}/delete").status_code == 302
    with app.app_context():
        assert db.session.get(AllowedNetwork, row_id) is None


def test_admin_page_explains_a_bad_range_next_to_the_field(admin_client, app):
    response = admin_client.post("/admin/network/", data={"cidr": "10.0.0.0/99", "role": ""})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert 'class="field-error" id="cidr-error"' in text
    assert "not an IP address or CIDR range" in text
    added = admin_client.post(
        "/admin/network/",
        data={"cidr": "127.0.0.1", "role": ""},
        headers={"HX-Request": "true"},
    )
    # An htmx post gets the list back with a notice, ready to swap into #network.
    assert added.status_code == 200
    assert 'id="network"' in added.get_data(as_text=True)
    assert "127.0.0.1/32 added." in added.get_data(as_text=True)
    again = admin_client.post("/admin/network/", data={"cidr": "127.0.0.1/32", "role": ""})
    assert again.status_code == 422 and "already in the global list" in again.get_data(as_text=True)


def test_locking_yourself_out_needs_the_confirmation(admin_client, app):
    response = admin_client.post("/admin/network/", data={"cidr": "192.0.2.0/24", "role": ""})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "I understand this locks me out" in text and "127.0.0.1" in text
    with app.app_context():
        assert services.list_networks() == []
    # Including your own address is fine without a confirmation.
    ok = admin_client.post("/admin/network/", data={"cidr": "127.0.0.0/8", "role": ""})
    assert ok.status_code == 302
    with app.app_context():
        own = services.list_networks()[0].id
    _allow(app, "192.0.2.0/24")
    # Removing the range you are in would lock you out too.
    refused = admin_client.post(f"/admin/network/{own}/delete")
    assert refused.status_code == 422 and "I understand this locks me out" in refused.get_data(
        as_text=True
    )
    with app.app_context():
        assert len(services.list_networks()) == 2
    confirmed = admin_client.post(f"/admin/network/{own}/delete", data={"confirm_lockout": "y"})
    assert confirmed.status_code == 302
    assert admin_client.get("/admin/network/").status_code == 403


def test_add_with_confirmation_locks_the_admin_out(admin_client, app):
    response = admin_client.post(
        "/admin/network/",
        data={"cidr": "192.0.2.0/24", "role": "", "confirm_lockout": "y"},
    )
    assert response.status_code == 302
    assert admin_client.get("/clients/").status_code == 403


def test_only_settings_managers_reach_the_page(client, app):
    with app.app_context():
        make_user("kierownik@example.com", role="manager")
    login(client, "kierownik@example.com")
    assert client.get("/admin/network/").status_code == 403
    assert client.post("/admin/network/", data={"cidr": "10.0.0.0/8"}).status_code == 403


# --- CLI ----------------------------------------------------------------------------


def test_cli_add_list_remove(app):
    runner = app.test_cli_runner()
    empty = runner.invoke(args=["allowlist", "list"])
    assert empty.exit_code == 0 and "every address is allowed" in empty.output
    added = runner.invoke(args=["allowlist", "add", "192.0.2.9/24", "--note", "office"])
    assert added.exit_code == 0, added.output
    assert "Added 192.0.2.0/24 to the global list." in added.output
    role = runner.invoke(args=["allowlist", "add", "2001:db8::/32", "--role", "sales"])
    assert "Added 2001:db8::/32 to the list of role sales." in role.output
    listed = runner.invoke(args=["allowlist", "list"])
    assert listed.output.splitlines() == [
        "192.0.2.0/24\tglobal\toffice",
        "2001:db8::/32\trole:sales",
    ]
    # Removal is by role: the sales range is not in the global list.
    wrong = runner.invoke(args=["allowlist", "remove", "2001:db8::/32"])
    assert wrong.exit_code != 0 and "2001:db8::/32 is not in the global list." in wrong.output
    removed = runner.invoke(args=["allowlist", "remove", "2001:db8::/32", "--role", "sales"])
    assert removed.exit_code == 0 and "Removed 2001:db8::/32" in removed.output
    removed = runner.invoke(args=["allowlist", "remove", "192.0.2.1/24"])
    assert "Removed 192.0.2.0/24 from the global list." in removed.output
    with app.app_context():
        assert services.list_networks() == []


def test_cli_refuses_bad_input_with_a_message(app):
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["allowlist", "add", "10.0.0.0/33"])
    assert bad.exit_code != 0 and "not an IP address or CIDR range" in bad.output
    role = runner.invoke(args=["allowlist", "add", "10.0.0.0/8", "--role", "boss"])
    assert role.exit_code != 0 and "no role named 'boss'" in role.output
    runner.invoke(args=["allowlist", "add", "10.0.0.0/8"])
    dup = runner.invoke(args=["allowlist", "add", "10.0.0.0/8"])
    assert dup.exit_code != 0 and "already in the global list" in dup.output
    bad_remove = runner.invoke(args=["allowlist", "remove", "nonsense"])
    assert bad_remove.exit_code != 0 and "not an IP address" in bad_remove.output
