"""The IP allow-list and login throttling.

Allow-list rules: an empty global list allows every address; a non-empty one must
contain the client address. When the user's role has ranges of its own, the address
must be inside one of those as well. Each process keeps a copy of the ranges and checks
on every request that no process changed them since (crm.org.services.shared), so a
change applies to every process at once.

Throttling counts failed attempts in the database over a sliding window, per account
and per client address; a success never erases failures. Password attempts and 2FA code
attempts ("totp") are counted apart, each with its own limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from crm.auth.models import Role
from crm.auth.services import ensure_shipped_roles
from crm.extensions import db
from crm.org.services import forget_settings_token, shared
from crm.security.models import AllowedNetwork, LoginAttempt
from crm.sqltypes import utcnow
from crm.web.client_ip import IPNetwork, parse_address

THROTTLE_WINDOW = timedelta(minutes=15)
MAX_ACCOUNT_FAILURES = 10  # failures per account in the window before it is throttled
MAX_IP_FAILURES = 20  # failures per client address in the window before it is throttled
# A second factor has far fewer possible values than a password, so fewer guesses.
MAX_TOTP_ACCOUNT_FAILURES = 5
MAX_TOTP_IP_FAILURES = 20
KIND_PASSWORD = "password"  # noqa: S105 (the kind of attempt, not a password)
KIND_TOTP = "totp"


class NetworkError(ValueError):
    """A user-facing reason why an allow-list change was refused."""


# --- parsing ---------------------------------------------------------------------


def parse_network(text: str) -> IPNetwork:
    """A range from CIDR text or a single address; IPv4-mapped IPv6 becomes IPv4."""
    value = (text or "").strip()
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise NetworkError(
            f"“{value}” is not an IP address or CIDR range "
            "(for example 192.0.2.0/24, 198.51.100.7 or 2001:db8::/32)."
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return network


# --- rules -----------------------------------------------------------------------


@dataclass
class Rules:
    global_networks: list[IPNetwork] = field(default_factory=list)
    role_networks: dict[int, list[IPNetwork]] = field(default_factory=dict)

    def allows(self, ip: str, role_id: int | None) -> bool:
        address = parse_address(ip)
        if self.global_networks and not _inside(address, self.global_networks):
            return False
        role_networks = self.role_networks.get(role_id) if role_id is not None else None
        return not role_networks or _inside(address, role_networks)


def _inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, nets) -> bool:  # type: ignore[no-untyped-def]
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in nets)


def rules_from(rows: Iterable[tuple[str, int | None]]) -> Rules:
    rules = Rules()
    for cidr, role_id in rows:
        network = parse_network(cidr)
        if role_id is None:
            rules.global_networks.append(network)
        else:
            rules.role_networks.setdefault(role_id, []).append(network)
    return rules


def _load_rules(session: Session) -> Rules:
    rows = session.execute(select(AllowedNetwork.cidr, AllowedNetwork.role_id)).all()
    return rules_from((row.cidr, row.role_id) for row in rows)


def current_rules() -> Rules:
    """The allow-list as stored now: the process's copy, reloaded whenever any process
    changed the list (the settings token, crm.org.services.shared)."""
    return shared("allowlist", _load_rules)


def forget_rules() -> None:
    """Read the list again after a change in this request."""
    forget_settings_token()


def ip_allowed(ip: str, role_id: int | None) -> bool:
    return current_rules().allows(ip, role_id)


# --- changes ---------------------------------------------------------------------


def list_networks() -> list[AllowedNetwork]:
    """Global ranges first, then per role by role name; each group by address."""
    return list(
        db.session.scalars(
            select(AllowedNetwork)
            .outerjoin(Role, AllowedNetwork.role_id == Role.id)
            .order_by(AllowedNetwork.role_id.is_not(None), Role.name, AllowedNetwork.cidr)
        )
    )


def find_role(name: str) -> Role:
    ensure_shipped_roles()
    role = db.session.scalar(select(Role).where(Role.name == name))
    if role is None:
        names = ", ".join(db.session.scalars(select(Role.name).order_by(Role.name)))
        raise NetworkError(f"no role named {name!r} (roles: {names})")
    return role


def find_network(cidr: str, role_id: int | None) -> AllowedNetwork | None:
    normalised = str(parse_network(cidr))
    return db.session.scalar(
        select(AllowedNetwork).where(
            AllowedNetwork.cidr == normalised,
            AllowedNetwork.role_id.is_(None)
            if role_id is None
            else AllowedNetwork.role_id == role_id,
        )
    )


def rules_after_add(cidr: str, role_id: int | None) -> Rules:
    rows = db.session.execute(select(AllowedNetwork.cidr, AllowedNetwork.role_id)).all()
    return rules_from([*((r.cidr, r.role_id) for r in rows), (cidr, role_id)])


def rules_after_remove(network_id: int) -> Rules:
    rows = db.session.execute(
        select(AllowedNetwork.cidr, AllowedNetwork.role_id).where(AllowedNetwork.id != network_id)
    ).all()
    return rules_from((r.cidr, r.role_id) for r in rows)


def add_network(cidr: str, role: Role | None = None, note: str = "") -> AllowedNetwork:
    network = parse_network(cidr)
    role_id = role.id if role is not None else None
    if find_network(str(network), role_id) is not None:
        where = f"the list of role {role.name}" if role is not None else "the global list"
        raise NetworkError(f"{network} is already in {where}.")
    row = AllowedNetwork(cidr=str(network), role_id=role_id, note=(note or "").strip()[:200])
    db.session.add(row)
    db.session.flush()
    forget_rules()
    return row


def remove_network(row: AllowedNetwork) -> None:
    db.session.delete(row)
    db.session.flush()
    forget_rules()


# --- login throttling ------------------------------------------------------------


def _failures_since(column, value: str, since: datetime, kind: str) -> int:  # type: ignore[no-untyped-def]
    return (
        db.session.scalar(
            select(func.count(LoginAttempt.id)).where(
                column == value,
                LoginAttempt.created_at >= since,
                LoginAttempt.success.is_(False),
                LoginAttempt.kind == kind,
            )
        )
        or 0
    )


def _throttled(
    ip: str, email: str, now: datetime | None, kind: str, max_account: int, max_ip: int
) -> bool:
    since = (now or utcnow()) - THROTTLE_WINDOW
    email = _normal_email(email)
    if email and _failures_since(LoginAttempt.email, email, since, kind) >= max_account:
        return True
    return bool(ip) and _failures_since(LoginAttempt.ip, ip, since, kind) >= max_ip


def _record(ip: str, email: str, success: bool, kind: str) -> LoginAttempt:
    attempt = LoginAttempt(
        ip=(ip or "")[:45], email=_normal_email(email), success=success, kind=kind
    )
    db.session.add(attempt)
    db.session.flush()
    return attempt


def login_throttled(ip: str, email: str, now: datetime | None = None) -> bool:
    """True when the account or the address used up its password failures in the window."""
    return _throttled(ip, email, now, KIND_PASSWORD, MAX_ACCOUNT_FAILURES, MAX_IP_FAILURES)


def record_login_attempt(ip: str, email: str, success: bool) -> LoginAttempt:
    return _record(ip, email, success, KIND_PASSWORD)


def totp_throttled(ip: str, email: str, now: datetime | None = None) -> bool:
    """True when the account or the address used up its 2FA code failures in the window."""
    return _throttled(ip, email, now, KIND_TOTP, MAX_TOTP_ACCOUNT_FAILURES, MAX_TOTP_IP_FAILURES)


def record_totp_attempt(ip: str, email: str, success: bool) -> LoginAttempt:
    """One 2FA code (or recovery code) attempt, counted apart from password attempts."""
    return _record(ip, email, success, KIND_TOTP)


def prune_login_attempts(older_than: datetime) -> int:
    """Delete attempts recorded before `older_than`; returns how many went."""
    result = db.session.execute(delete(LoginAttempt).where(LoginAttempt.created_at < older_than))
    return result.rowcount or 0


def _normal_email(email: str) -> str:
    return (email or "").strip().lower()[:254]
