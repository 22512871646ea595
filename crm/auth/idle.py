"""Server-side idle timeout: a session unused for CRM_IDLE_TIMEOUT_MINUTES is locked.

The lock screen asks for the password again and then resumes the page the user was on.
The server decides (the session keeps `last_seen`); the page's timer only shows the lock
screen on time."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import current_app, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from crm.extensions import htmx
from crm.web.access import declared_access
from crm.web.urls import safe_next

LAST_SEEN = "last_seen"
LOCKED = "locked"
# Reachable while locked: the lock screen itself, signing out, and static files.
EXEMPT = {"auth.lock", "auth.logout", "auth.login", "static"}


def mark_active() -> None:
    session[LAST_SEEN] = int(time.time())
    session.pop(LOCKED, None)


def _page_to_resume() -> str | None:
    if htmx and request.headers.get("HX-Current-URL"):
        current = urlsplit(request.headers["HX-Current-URL"])
        return current.path + (f"?{current.query}" if current.query else "")
    if request.method == "GET":
        return request.full_path
    return request.referrer and urlsplit(request.referrer).path


def enforce_idle_lock() -> ResponseReturnValue | None:
    endpoint = request.endpoint
    if endpoint is None or endpoint in EXEMPT or endpoint.endswith(".static"):
        return None
    if not current_user.is_authenticated:
        return None
    if declared_access(current_app.view_functions[endpoint]) == "public":
        return None
    timeout = current_app.config["CRM_IDLE_TIMEOUT_SECONDS"]
    now = int(time.time())
    last_seen = session.get(LAST_SEEN, now)
    if session.get(LOCKED) or now - last_seen > timeout:
        session[LOCKED] = True
        lock_url = url_for("auth.lock", next=safe_next(_page_to_resume()))
        if htmx:
            return "", 200, {"HX-Redirect": lock_url}
        return redirect(lock_url)
    session[LAST_SEEN] = now
    return None
