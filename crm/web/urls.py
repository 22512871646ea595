"""Redirect targets taken from the request."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, request, url_for


def safe_next(target: str | None) -> str | None:
    """Only same-site paths, so a `next` parameter cannot send anyone elsewhere."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target.rstrip("?")


def next_url(default: str) -> str:
    """The request's `next` (form or query), if it is safe; else `default`."""
    return safe_next(request.values.get("next")) or default


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute link for emails: on CRM_BASE_URL when set (the address people use,
    which a request behind a proxy may not show), else on the current request's host."""
    base = (current_app.config.get("CRM_BASE_URL") or "").rstrip("/")
    if base:
        return base + url_for(endpoint, _external=False, **values)
    return url_for(endpoint, _external=True, **values)
