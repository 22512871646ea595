from __future__ import annotations

from flask import Flask, render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from crm.extensions import htmx


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        titles = {
            400: _("Bad request"),
            403: _("Not allowed"),
            404: _("Not found"),
            405: _("Not allowed"),
            413: _("Too large"),
            429: _("Too many attempts"),
        }
        messages = {
            403: _("Your role does not allow this."),
            404: _("There is nothing here, or it is outside what you may see."),
            413: _(
                "The upload is larger than the %(mb)s MB limit.",
                mb=app.config["CRM_MAX_UPLOAD_BYTES"] // (1024 * 1024),
            ),
        }
        code = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            code = 413
        context = {
            "code": code,
            "title": titles.get(code, error.name),
            "message": messages.get(code, error.description),
        }
        template = "errors/_error.html" if htmx else "errors/error.html"
        response = app.make_response((render_template(template, **context), code))
        if htmx:
            # Swap the message into the page's flash area instead of the target.
            response.headers["HX-Retarget"] = "#flash"
            response.headers["HX-Reswap"] = "innerHTML"
        response.vary.add("HX-Request")
        return response

    @app.errorhandler(500)
    def server_error(error: Exception):  # type: ignore[no-untyped-def]
        app.logger.exception("unhandled error on %s", request.path)
        context = {
            "code": 500,
            "title": _("Something went wrong"),
            "message": _("The error was logged. Nothing you saved before this was lost."),
        }
        if htmx:
            headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
            return render_template("errors/_error.html", **context), 500, headers
        return render_template("errors/error.html", **context), 500
