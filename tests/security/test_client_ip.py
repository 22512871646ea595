"""Client address resolution: X-Forwarded-For only counts through trusted proxies."""

from __future__ import annotations

import pytest

from crm.web.client_ip import client_ip, parse_address, parse_proxies, resolve_client_ip

PROXIES = parse_proxies(("10.0.0.0/8", "192.0.2.1", "fd00::/8"))


def test_untrusted_peer_is_the_client_and_its_header_is_ignored():
    assert resolve_client_ip("198.51.100.9", ["203.0.113.5"], PROXIES) == "198.51.100.9"
    assert resolve_client_ip("198.51.100.9", [], ()) == "198.51.100.9"


def test_trusted_proxy_hands_over_the_first_untrusted_hop_from_the_right():
    assert resolve_client_ip("10.0.0.2", ["203.0.113.5"], PROXIES) == "203.0.113.5"
    # The client wrote a fake address itself; proxies appended the real one.
    header = ["1.2.3.4, 203.0.113.5, 10.9.9.9"]
    assert resolve_client_ip("192.0.2.1", header, PROXIES) == "203.0.113.5"
    # Several header lines are read as one list.
    assert resolve_client_ip("10.0.0.2", ["1.2.3.4", "203.0.113.5"], PROXIES) == "203.0.113.5"


def test_invalid_header_values_are_ignored():
    assert resolve_client_ip("10.0.0.2", ["203.0.113.5, not-an-ip, "], PROXIES) == "203.0.113.5"
    assert resolve_client_ip("10.0.0.2", ["garbage"], PROXIES) == "10.0.0.2"
    assert resolve_client_ip("10.0.0.2", [""], PROXIES) == "10.0.0.2"


def test_only_proxies_in_the_header_gives_the_leftmost_proxy():
    assert resolve_client_ip("10.0.0.2", ["10.0.0.7, 10.0.0.8"], PROXIES) == "10.0.0.7"


def test_ipv6_and_ipv4_mapped_addresses():
    assert resolve_client_ip("fd00::1", ["2001:db8::5"], PROXIES) == "2001:db8::5"
    assert resolve_client_ip("::ffff:10.0.0.2", ["203.0.113.5"], PROXIES) == "203.0.113.5"
    assert resolve_client_ip("::ffff:198.51.100.9", [], PROXIES) == "198.51.100.9"
    assert str(parse_address(" ::ffff:192.0.2.7 ")) == "192.0.2.7"
    assert parse_address("192.0.2.300") is None


def test_bad_trusted_proxy_setting_is_a_configuration_error():
    with pytest.raises(RuntimeError, match="CRM_TRUSTED_PROXIES"):
        parse_proxies(("10.0.0.0/8", "nonsense"))


def test_client_ip_reads_the_request_and_the_setting(app, monkeypatch):
    spoofed = {"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    with app.test_request_context(environ_base=spoofed):
        assert client_ip() == "198.51.100.9"
    monkeypatch.setitem(app.config, "CRM_TRUSTED_PROXIES", ["198.51.100.0/24"])
    with app.test_request_context(environ_base=spoofed):
        assert client_ip() == "203.0.113.5"
