"""Page-or-partial rendering: one partial serves the full page and the htmx swap."""

from __future__ import annotations

from typing import Any

from flask import make_response, render_template
from flask.wrappers import Response

from crm.extensions import htmx


def render(page: str, partial: str | None = None, status: int = 200, **context: Any) -> Response:
    """Render `partial` alone for an htmx request, otherwise the full `page`.

    The full page includes the same partial, so both paths show the same markup.
    """
    template = partial if (partial and htmx and not htmx.boosted) else page
    response = make_response(render_template(template, **context), status)
    response.vary.add("HX-Request")
    return response


def htmx_redirect(url: str) -> Response:
    """Send the browser to `url`: a full redirect for htmx, a 303 otherwise."""
    if htmx:
        response = make_response("", 204)
        response.headers["HX-Redirect"] = url
        return response
    response = make_response("", 303)
    response.headers["Location"] = url
    return response
