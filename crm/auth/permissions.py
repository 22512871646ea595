"""The permission vocabulary: one enum, named resource:action."""

from __future__ import annotations

import enum


class Permission(enum.StrEnum):
    CLIENTS_VIEW = "clients:view"
    CLIENTS_EDIT = "clients:edit"
    CLIENTS_DELETE = "clients:delete"
    CLIENTS_EXPORT = "clients:export"
    CLIENTS_ERASE = "clients:erase"
    TASKS_VIEW = "tasks:view"
    TASKS_EDIT = "tasks:edit"
    DEALS_VIEW = "deals:view"
    DEALS_EDIT = "deals:edit"
    FIELDS_MANAGE = "fields:manage"
    SETTINGS_MANAGE = "settings:manage"
    USERS_MANAGE = "users:manage"
    AUDIT_VIEW = "audit:view"
    CAMPAIGNS_SEND = "campaigns:send"
    LISTS_MANAGE = "lists:manage"
    REQUESTS_MANAGE = "requests:manage"
    APPOINTMENTS_VIEW = "appointments:view"
    APPOINTMENTS_EDIT = "appointments:edit"
    APPOINTMENTS_MANAGE = "appointments:manage"


class ClientScope(enum.StrEnum):
    """Which client records a role reaches."""

    OWN = "own"
    TEAM = "team"
    ALL = "all"


# Roles shipped with a new installation: (name, scope, permissions).
SHIPPED_ROLES: list[tuple[str, ClientScope, list[Permission]]] = [
    ("admin", ClientScope.ALL, list(Permission)),
    (
        "manager",
        ClientScope.ALL,
        [
            p
            for p in Permission
            if p
            not in {
                Permission.USERS_MANAGE,
                Permission.SETTINGS_MANAGE,
                Permission.FIELDS_MANAGE,
                Permission.CLIENTS_ERASE,
                Permission.AUDIT_VIEW,
            }
        ],
    ),
    (
        "sales",
        ClientScope.TEAM,
        [
            Permission.CLIENTS_VIEW,
            Permission.CLIENTS_EDIT,
            Permission.TASKS_VIEW,
            Permission.TASKS_EDIT,
            Permission.DEALS_VIEW,
            Permission.DEALS_EDIT,
            Permission.APPOINTMENTS_VIEW,
            Permission.APPOINTMENTS_EDIT,
        ],
    ),
    (
        "readonly",
        ClientScope.ALL,
        [
            Permission.CLIENTS_VIEW,
            Permission.TASKS_VIEW,
            Permission.DEALS_VIEW,
            Permission.APPOINTMENTS_VIEW,
        ],
    ),
]
