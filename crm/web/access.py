"""Every route declares what it needs; one before-request hook enforces it.

Routes are marked with @public or @requires(Permission...). A route that declares
nothing is refused (fail closed), and a test walks the URL map to catch it early.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, request
from flask_login import current_user

from crm.auth.permissions import Permission
from crm.extensions import login_manager

F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """No login needed (login page, health check, later: unsubscribe, booking)."""
    view.access_public = True  # type: ignore[attr-defined]
    return view


def login_only(view: F) -> F:
    """Any signed-in user (their own profile, logout, the dashboard)."""
    view.required_permissions = ()  # type: ignore[attr-defined]
    return view


def requires(*permissions: Permission) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        view.required_permissions = tuple(permissions)  # type: ignore[attr-defined]
        return view

    return decorate


def declared_access(view: Callable[..., Any]) -> str | tuple[Permission, ...] | None:
    if getattr(view, "access_public", False):
        return "public"
    return getattr(view, "required_permissions", None)


def enforce_access() -> Any:
    endpoint = request.endpoint
    if endpoint is None or endpoint == "static" or endpoint.endswith(".static"):
        return None
    view = current_app.view_functions[endpoint]
    declared = declared_access(view)
    if declared == "public":
        return None
    if declared is None:
        current_app.logger.error("route %s declares no permission; refused", endpoint)
        abort(403)
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not all(current_user.can(p) for p in declared):
        abort(403)
    return None
