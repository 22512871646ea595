"""Redirect targets taken from the request."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request


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
