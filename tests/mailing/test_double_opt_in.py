"""Double opt-in: unconfirmed until the signed link is used, once; the email goes out
after the commit and advertises nothing."""

from __future__ import annotations

import re
import time
from unittest import mock

from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from crm.consents.models import ConsentEvent
from crm.consents.policy import may_contact
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import OptIn, SubscriptionEvent
from crm.mailing.tasks import send_confirmation
from tests.conftest import make_client
from tests.consents.factories import queued
from tests.mailing.factories import make_list


def _subscribe_from_card(app, admin_client, stub_queue):  # type: ignore[no-untyped-def]
    with app.app_context():
        client = make_client(first_name="Jiří", last_name="Dvořák", email="jiri@example.cz")
        mlist = make_list("Měsíčník", opt_in=OptIn.DOUBLE, description="Jednou měsíčně.")
        ids = (client.id, mlist.id)
    response = admin_client.post(
        f"/clients/{ids[0]}/lists/subscribe",
        data={"list_id": ids[1]},
        headers={"HX-Request": "true"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Confirmation email for “Měsíčník” sent" in response.get_data(as_text=True)
    [message] = queued(stub_queue)
    assert message.actor_name == send_confirmation.actor_name
    return ids, message


def test_confirmation_email_and_link_confirm_once(app, admin_client, client, stub_queue, tmp_path):
    (client_id, list_id), message = _subscribe_from_card(app, admin_client, stub_queue)
    with app.app_context():
        sub = services.get_subscription(client_id, list_id)
        assert sub.status == "unconfirmed"
        assert not may_contact(client_id, "newsletter", "email")
        sent = []
        with mock.patch("crm.mailing.tasks.deliver", sent.append):
            send_confirmation(*message.args)
        [email] = sent
    assert email["To"] == "jiri@example.cz"
    body = email.get_content()
    assert "Hello Jiří Dvořák," in body and "“Měsíčník”" in body and "Jednou měsíčně." in body
    token = re.search(r"/lists/confirm/(\S+)", body).group(1)
    url = f"/lists/confirm/{token}"
    page = client.get(url)
    assert page.status_code == 200 and "Yes, subscribe me" in page.get_data(as_text=True)
    with app.app_context():  # GET changes nothing
        assert services.get_subscription(client_id, list_id).status == "unconfirmed"
    done = client.post(url, environ_base={"REMOTE_ADDR": "198.51.100.20"})
    assert done.status_code == 200 and "is confirmed" in done.get_data(as_text=True)
    with app.app_context():
        assert services.get_subscription(client_id, list_id).status == "confirmed"
        assert may_contact(client_id, "newsletter", "email")
        event = db.session.scalar(select(ConsentEvent))
        assert event.method == "double_opt_in" and event.ip == "198.51.100.0"
        assert "203.0.113.0" in event.note  # the request's truncated address
        history = db.session.scalars(select(SubscriptionEvent).order_by(SubscriptionEvent.id))
        assert [(e.status, e.ip) for e in history] == [
            ("unconfirmed", "203.0.113.0"),
            ("confirmed", "198.51.100.0"),
        ]
    for again in (client.get(url), client.post(url)):
        assert again.status_code == 200
        assert "already confirmed" in again.get_data(as_text=True)
    with app.app_context():
        assert len(db.session.scalars(select(ConsentEvent)).all()) == 1
        # A redelivered message sends nothing any more.
        with mock.patch("crm.mailing.tasks.deliver") as deliver:
            send_confirmation(*message.args)
        deliver.assert_not_called()


def test_tampered_expired_and_replaced_links_get_400(app, admin_client, client, stub_queue):
    (client_id, list_id), _message = _subscribe_from_card(app, admin_client, stub_queue)
    with app.app_context():
        sub = services.get_subscription(client_id, list_id)
        token = services.confirmation_token(sub)
        signer = URLSafeTimedSerializer(app.secret_key, salt=services.CONFIRM_SALT)
        forged = signer.dumps([sub.id, client_id + 1, list_id, sub.confirm_nonce])
        stale = signer.dumps([sub.id, client_id, list_id, "0" * 32])
    for bad in (token[:-3] + "AAA", "x", "a" * 400, forged):
        response = client.get(f"/lists/confirm/{bad}")
        assert response.status_code == 400
        assert "This link is not valid" in response.get_data(as_text=True)
        assert client.post(f"/lists/confirm/{bad}").status_code == 400
    response = client.post(f"/lists/confirm/{stale}")
    assert response.status_code == 400 and "no longer applies" in response.get_data(as_text=True)
    later = time.time() + (services.CONFIRM_DAYS + 1) * 86400
    with mock.patch("itsdangerous.timed.time.time", return_value=later):
        response = client.post(f"/lists/confirm/{token}")
    assert response.status_code == 400 and "has expired" in response.get_data(as_text=True)
    with app.app_context():
        assert services.get_subscription(client_id, list_id).status == "unconfirmed"
