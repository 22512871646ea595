"""The client's IP address, honouring X-Forwarded-For only from trusted proxies.

`request.remote_addr` is the direct peer. When that peer is one of
CRM_TRUSTED_PROXIES (single addresses or CIDR ranges), X-Forwarded-For is read from
the right: each trusted proxy appended the address it received from, so the first
address that is not a trusted proxy is the client. Anything a client writes into the
header itself sits further left and is never reached. An untrusted peer's header is
ignored entirely, so it cannot be spoofed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from flask import current_app, request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str | None) -> IPAddress | None:
    """An address, IPv4-mapped IPv6 turned into IPv4; None when `text` is not one."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=16)
def parse_proxies(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """CRM_TRUSTED_PROXIES as networks; a bad entry is a configuration error."""
    networks = []
    for entry in proxies:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise RuntimeError(
                f"CRM_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR range"
            ) from exc
    return tuple(networks)


def _trusted(address: IPAddress, proxies: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def resolve_client_ip(
    remote_addr: str | None, forwarded_for: Iterable[str], proxies: Iterable[IPNetwork]
) -> str:
    """The client address for a peer `remote_addr` and its X-Forwarded-For values."""
    proxies = tuple(proxies)
    peer = parse_address(remote_addr)
    if peer is None:
        return remote_addr or ""
    if not _trusted(peer, proxies):
        return str(peer)
    hops = [part for value in forwarded_for for part in value.split(",")]
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            continue  # an invalid value is ignored
        client = address
        if not _trusted(address, proxies):
            return str(address)
    # Every hop was a trusted proxy: the leftmost one is as far as we can see.
    return str(client)


def client_ip() -> str:
    """The current request's client address (see the module docstring)."""
    proxies = parse_proxies(tuple(current_app.config.get("CRM_TRUSTED_PROXIES") or ()))
    return resolve_client_ip(
        request.remote_addr, request.headers.getlist("X-Forwarded-For"), proxies
    )
