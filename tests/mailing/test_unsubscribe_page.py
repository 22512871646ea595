"""The public unsubscribe / preferences page: GET changes nothing, POST acts, the
RFC 8058 one-click POST works without cookie or CSRF token, a switch stays inside the
list's group, and the page shows nothing of the client."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import select

from crm.consents.models import ConsentEvent
from crm.consents.policy import may_contact
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import SubscriptionEvent
from tests.conftest import make_client, make_test_app
from tests.mailing.factories import make_campaign_id, make_group, make_list


@pytest.fixture
def subscribed(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        group = make_group("Newsletter")
        pl = make_list("Newsletter PL", group=group, description="Co miesiąc z Łodzi.")
        de = make_list("Newsletter DE", group=group)
        other = make_list("Angebote")
        client = make_client(
            first_name="Jürgen", last_name="Müller", email="juergen@example.de", city="Łódź"
        )
        services.subscribe(client, pl)
        db.session.commit()
        campaign_id = make_campaign_id()
        url = services.unsubscribe_url(client.id, pl.id, campaign_id=campaign_id)
        return {
            "client_id": client.id,
            "pl": pl.id,
            "de": de.id,
            "other": other.id,
            "path": urlsplit(url).path,
            "campaign_id": campaign_id,
            "url": url,
        }


def _status(client_id: int, list_id: int) -> str | None:
    sub = services.get_subscription(client_id, list_id)
    return sub.status if sub else None


def test_the_url_is_absolute_on_the_base_url(app, subscribed):
    assert subscribed["url"].startswith(app.config["CRM_BASE_URL"].rstrip("/") + "/lists/u/")


def test_get_changes_nothing_and_shows_no_client_data(app, client, subscribed):
    page = client.get(subscribed["path"])
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Newsletter PL" in text and "Co miesiąc z Łodzi." in text
    assert "Newsletter DE" in text and "Switch to this list" in text
    assert "Angebote" not in text  # another group
    for private in ("Müller", "Jürgen", "juergen@example.de", "Łódź"):
        assert private not in text
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "confirmed"
        assert (
            db.session.scalar(
                select(SubscriptionEvent).where(SubscriptionEvent.status == "unsubscribed")
            )
            is None
        )


def test_one_click_post_without_cookie_or_csrf_token(app, database_url, tmp_path, subscribed):
    # An app with CSRF on, as in production; the test client sends no cookie.
    strict = make_test_app(database_url, tmp_path, WTF_CSRF_ENABLED=True)
    with strict.app_context():
        db.session.remove()
    mail_client = strict.test_client(use_cookies=False)
    response = mail_client.post(
        subscribed["path"],
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "unsubscribed"
        assert not may_contact(subscribed["client_id"], "newsletter", "email")
        event = db.session.scalar(
            select(SubscriptionEvent).where(SubscriptionEvent.status == "unsubscribed")
        )
        assert event.source == "one_click" and event.campaign_id == subscribed["campaign_id"]
        assert services.unsubscribes_for_campaign(subscribed["campaign_id"]) == 1
        assert services.unsubscribes_for_campaign(subscribed["campaign_id"] + 1) == 0
    # Any other body without the page's token is refused and changes nothing.
    with app.app_context():
        services.subscribe(
            db.session.get(services.Client, subscribed["client_id"]),
            db.session.get(services.MailingList, subscribed["pl"]),
        )
        db.session.commit()
    refused = mail_client.post(subscribed["path"], data={"action": "unsubscribe"})
    assert refused.status_code == 400
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "confirmed"


def test_page_unsubscribe_then_resubscribe(app, client, subscribed):
    done = client.post(subscribed["path"], data={"action": "unsubscribe"})
    assert done.status_code == 200
    assert "You are unsubscribed from “Newsletter PL”." in done.get_data(as_text=True)
    assert "Subscribe again" in done.get_data(as_text=True)
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "unsubscribed"
    again = client.post(subscribed["path"], data={"action": "resubscribe"})
    assert again.status_code == 200 and "again" in again.get_data(as_text=True)
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "confirmed"
        methods = db.session.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)).all()
        assert methods == ["given", "withdrawn", "given"]


def test_switch_within_the_group_and_not_outside_it(app, client, subscribed):
    refused = client.post(
        subscribed["path"], data={"action": "switch", "target": subscribed["other"]}
    )
    assert refused.status_code == 400
    assert "same group" in refused.get_data(as_text=True)
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["other"]) is None
    done = client.post(subscribed["path"], data={"action": "switch", "target": subscribed["de"]})
    assert done.status_code == 200 and "Newsletter DE" in done.get_data(as_text=True)
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "unsubscribed"
        assert _status(subscribed["client_id"], subscribed["de"]) == "confirmed"
        assert may_contact(subscribed["client_id"], "newsletter", "email")


def test_tampered_or_unknown_token_gets_400(app, client, subscribed):
    path = subscribed["path"]
    signer = URLSafeSerializer(app.secret_key, salt=services.UNSUBSCRIBE_SALT)
    unknown = "/lists/u/" + signer.dumps([subscribed["client_id"], subscribed["other"], None])
    for bad in (path[:-2] + "xx", "/lists/u/x", "/lists/u/" + "a" * 400, unknown):
        for response in (
            client.get(bad),
            client.post(
                bad,
                data="List-Unsubscribe=One-Click",
                content_type="application/x-www-form-urlencoded",
            ),
        ):
            assert response.status_code == 400
            assert "This link is not valid" in response.get_data(as_text=True)
    with app.app_context():
        assert _status(subscribed["client_id"], subscribed["pl"]) == "confirmed"


def test_list_names_are_escaped_on_the_public_pages(app, client):
    xss = "<img src=x onerror=alert(1)>"
    with app.app_context():
        group = make_group(xss)
        mlist = make_list(xss, group=group, description=xss)
        make_list(xss + " 2", group=group, description=xss)
        person = make_client(email="x@example.pl")
        services.subscribe(person, mlist)
        db.session.commit()
        path = urlsplit(services.unsubscribe_url(person.id, mlist.id)).path
    text = client.get(path).get_data(as_text=True)
    assert xss not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
