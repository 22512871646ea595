"""The staff calendar feed (a public .ics URL) and the panel to create or revoke it.

The feed itself needs no session: phones fetch it without cookies, and the secret in
the URL is the credential. Like the other public pages (unsubscribe, booking) it is
not behind the IP allow-list, which guards signed-in sessions only.

The secret is shown once, right after it is made: the create route renders it into
the response instead of redirecting, so it is never put into the session cookie.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, make_response, redirect, render_template_string, request, url_for
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_login import current_user

from crm.appointments import feeds, ics
from crm.appointments.models import CalendarFeed
from crm.appointments.views import bp
from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.extensions import db
from crm.org.services import organisation
from crm.web.access import public, requires
from crm.web.urls import safe_next

# The panel on a page of its own: after creating a link without htmx, and for people
# who may see the calendar but not edit working hours.
_PAGE = """{% extends "base.html" %}
{% block title %}{{ _("Calendar subscription") }}{% endblock %}
{% block content %}
{% include "appointments/_head.html" %}
<div class="page-head"><div>
  <small><a href="{{ back_url }}">← {{ back_label }}</a></small>
  <h1>{{ _("Calendar subscription") }}</h1>
</div></div>
{% include "appointments/_feed_panel.html" %}
{% endblock %}"""


@bp.app_context_processor
def _feed_helpers() -> dict[str, Any]:
    return {"calendar_feed_of": feeds.live_feed, "calendar_feed_detail": ics.feed_detail}


# --- the feed ------------------------------------------------------------------------------


@public
def calendar_feed(token: str) -> ResponseReturnValue:
    """The .ics a phone subscribes to; 404 for anything but a live token (no hint why)."""
    feed = feeds.feed_for_token(token)
    if feed is None or not feed.user.can(Permission.APPOINTMENTS_VIEW):
        abort(404)
    user = feed.user
    if feeds.mark_used(feed):
        db.session.commit()
    appointments = feeds.feed_appointments(user.id)
    # Texts in the staff member's language, not the phone's Accept-Language.
    with force_locale(user.locale or organisation().default_locale or "en"):
        body = ics.feed_calendar(user, appointments, detail=ics.feed_detail())
    response = make_response(body, 200)
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Content-Disposition"] = 'inline; filename="calendar.ics"'
    # Personal data for one person: no shared cache keeps it, no search engine lists it.
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@bp.record_once
def _register_feed_route(state: Any) -> None:
    # The feed lives at /calendar/feed/..., outside the blueprint's /appointments prefix
    # (a blueprint always prefixes its own rules), under the blueprint's endpoint name.
    state.app.add_url_rule(
        "/calendar/feed/<token>.ics",
        endpoint="appointments.calendar_feed",
        view_func=calendar_feed,
        methods=["GET"],
    )


# --- the panel -----------------------------------------------------------------------------


def _may_manage(person_id: int) -> bool:
    return person_id == current_user.id or current_user.can(Permission.APPOINTMENTS_MANAGE)


def _back(person: User) -> tuple[str, str]:
    if current_user.can(Permission.APPOINTMENTS_EDIT):
        if person.id == current_user.id:
            return url_for("appointments.hours"), _("Working hours")
        return url_for("appointments.staff_hours", user_id=person.id), _("Working hours")
    return url_for("appointments.calendar"), _("Calendar")


def _panel(person: User, *, new_url: str | None = None) -> Response:
    back_url, back_label = _back(person)
    response = make_response(
        render_template_string(
            _PAGE, person=person, new_feed_url=new_url, back_url=back_url, back_label=back_label
        )
    )
    if new_url:
        response.headers["Cache-Control"] = "no-store"  # the secret is in this page
    return response


@bp.route("/calendar-feed", methods=["GET"])
@requires(Permission.APPOINTMENTS_VIEW)
def my_feed() -> ResponseReturnValue:
    """One's own subscription, for anyone who may see the calendar."""
    return _panel(current_user._get_current_object())  # type: ignore[attr-defined]


@bp.route("/calendar-feed/create", methods=["POST"])
@requires(Permission.APPOINTMENTS_VIEW)
def create_feed() -> ResponseReturnValue:
    """A new link for oneself only: the secret is shown to the person it belongs to,
    never made by someone else on their behalf."""
    me: User = current_user._get_current_object()  # type: ignore[attr-defined]
    replaced = feeds.live_feed(me.id) is not None
    token = feeds.create_feed(me, by=me)
    db.session.commit()
    if replaced:
        flash(_("New calendar link made; the old one no longer works."), "success")
    else:
        flash(_("Calendar link made."), "success")
    return _panel(me, new_url=feeds.feed_url(token))


@bp.route("/calendar-feed/<int:feed_id>/revoke", methods=["POST"])
@requires(Permission.APPOINTMENTS_VIEW)
def revoke_feed(feed_id: int) -> ResponseReturnValue:
    """One's own link, or (appointments:manage) anyone's."""
    feed = db.session.get(CalendarFeed, feed_id)
    if feed is None:
        abort(404)
    if not _may_manage(feed.user_id):
        abort(403)
    feeds.revoke_feed(feed, by=current_user._get_current_object())  # type: ignore[attr-defined]
    db.session.commit()
    flash(_("Calendar link revoked: it no longer works."), "success")
    person = db.session.get(User, feed.user_id)
    assert person is not None
    return redirect(safe_next(request.form.get("next")) or _back(person)[0], 303)
