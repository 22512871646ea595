"""Done when 4: the renewal link works once, is bound to one client and one purpose,
and a tampered or expired link gets a clear page. Also: the email, and the request
sent from an expiry task."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.consents import services
from crm.consents.models import ConsentEvent, ConsentRenewal, ConsentState, EventKind
from crm.consents.policy import may_contact
from crm.consents.services import RENEWAL_SALT, RenewalError
from crm.extensions import db
from crm.mail import send_email
from crm.tasks.models import Task, TaskOrigin
from tests.conftest import make_client
from tests.consents.factories import days, give, make_purpose, queued


def _link_token(body: str) -> str:
    match = re.search(r"/consent/renew/(\S+)", body)
    assert match, body
    return match.group(1)


@pytest.fixture
def renewal_setup(app, admin_client, stub_queue):  # type: ignore[no-untyped-def]
    """A client whose consent is near expiry, and the renewal request emailed to them."""
    with app.app_context():
        client = make_client(first_name="Jiří", last_name="Dvořák", email="jiri@example.com")
        purpose = make_purpose(validity_months=12)
        give(client.id, purpose, now=services.utcnow() - timedelta(days=350))
        ids = (client.id, purpose.id)
    response = admin_client.post(
        f"/clients/{ids[0]}/consents/{ids[1]}/renewal", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert "Renewal request for “Newsletter” sent to jiri@example.com." in response.get_data(
        as_text=True
    )
    [message] = queued(stub_queue)
    assert message.actor_name == send_email.actor_name
    to, subject, body = message.args
    return {
        "client_id": ids[0],
        "purpose_id": ids[1],
        "to": to,
        "subject": subject,
        "body": body,
        "token": _link_token(body),
    }


def test_the_email_asks_one_question_with_a_signed_link(app, renewal_setup):
    with app.app_context():
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "consent.renewal_sent")
        )
        assert entry.client_id == renewal_setup["client_id"]
        assert entry.details["purpose"] == "newsletter"
    assert renewal_setup["to"] == "jiri@example.com"
    assert renewal_setup["subject"] == "Please confirm your consent: Newsletter"
    body = renewal_setup["body"]
    assert "Hello Jiří Dvořák," in body and "Your consent is valid until" in body
    assert "The link works once" in body


def test_the_link_renews_once_with_evidence(client, app, renewal_setup):
    url = f"/consent/renew/{renewal_setup['token']}"
    page = client.get(url)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "We send you our newsletter" in text and "Yes, keep my consent" in text
    with app.app_context():  # GET changes nothing (link scanners)
        assert db.session.scalar(select(ConsentRenewal)).used_at is None
    done = client.post(
        url,
        data={"answer": "yes"},
        headers={"User-Agent": "Firefox/140"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    assert done.status_code == 200
    assert "is renewed" in done.get_data(as_text=True)
    with app.app_context():
        event = db.session.scalar(
            select(ConsentEvent).where(ConsentEvent.kind == EventKind.RENEWED.value)
        )
        assert event.method == "email" and event.actor_id is None
        assert event.ip == "203.0.113.0" and event.user_agent == "Firefox/140"
        assert renewal_setup["token"] not in event.source_url
        assert event.expires_at > event.occurred_at + timedelta(days=360)
        assert may_contact(renewal_setup["client_id"], "newsletter", "email")
    again = client.get(url)
    assert again.status_code == 400 and "used already" in again.get_data(as_text=True)
    twice = client.post(url, data={"answer": "yes"})
    assert twice.status_code == 400
    with app.app_context():
        kinds = db.session.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)).all()
        assert kinds == ["given", "renewed"]


def test_saying_no_withdraws(client, app, renewal_setup):
    url = f"/consent/renew/{renewal_setup['token']}"
    response = client.post(url, data={"answer": "no"})
    assert response.status_code == 200
    assert "no longer use your data" in response.get_data(as_text=True)
    with app.app_context():
        state = db.session.scalar(select(ConsentState))
        assert state.status == "withdrawn"
        assert not may_contact(renewal_setup["client_id"], "newsletter", "email")


def test_a_tampered_link_gets_a_clear_page(client, app, renewal_setup):
    token = renewal_setup["token"]
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (tampered, "x", "a" * 400):
        response = client.get(f"/consent/renew/{bad}")
        assert response.status_code == 400
        assert "This link is not valid" in response.get_data(as_text=True)
        assert client.post(f"/consent/renew/{bad}", data={"answer": "yes"}).status_code == 400
    with app.app_context():
        assert db.session.scalar(select(ConsentRenewal)).used_at is None


def test_the_link_is_bound_to_its_client_and_purpose(client, app, renewal_setup):
    """A validly signed token naming this request with another client or purpose (what
    only someone holding the key could make) is refused like a tampered one."""
    with app.app_context():
        renewal = db.session.scalar(select(ConsentRenewal))
        other_client = make_client(last_name="Novák").id
        other_purpose = make_purpose("SMS reminders", channels=["sms"]).id
        signer = URLSafeTimedSerializer(app.secret_key, salt=RENEWAL_SALT)
        forged = [
            signer.dumps([renewal.id, other_client, renewal.purpose_id, renewal.nonce]),
            signer.dumps([renewal.id, renewal.client_id, other_purpose, renewal.nonce]),
            signer.dumps([renewal.id, renewal.client_id, renewal.purpose_id, "0" * 32]),
        ]
    for token in forged:
        response = client.post(f"/consent/renew/{token}", data={"answer": "yes"})
        assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "renewed")) is None
        # The same token signed for another purpose of the app (another salt) is refused.
        with pytest.raises(RenewalError):
            other = URLSafeTimedSerializer(app.secret_key, salt="crm.other")
            services.redeemable_renewal(
                other.dumps([renewal.id, renewal.client_id, renewal.purpose_id, renewal.nonce])
            )


def test_an_expired_link_gets_a_clear_page(client, app, renewal_setup):
    with app.app_context():
        renewal = db.session.scalar(select(ConsentRenewal))
        later = renewal.expires_at + timedelta(seconds=1)
        with pytest.raises(RenewalError) as caught:
            services.redeemable_renewal(renewal_setup["token"], now=later)
        assert caught.value.reason == "expired"
        # Over HTTP, with the request's own clock: move the row's expiry into the past.
        db.session.execute(
            ConsentRenewal.__table__.update().values(expires_at=services.utcnow() - days(1))
        )
        db.session.commit()
    response = client.get(f"/consent/renew/{renewal_setup['token']}")
    assert response.status_code == 400
    assert "This link has expired" in response.get_data(as_text=True)


def test_a_withdrawal_after_sending_voids_the_link(client, app, renewal_setup):
    with app.app_context():
        purpose = db.session.get(services.ConsentPurpose, renewal_setup["purpose_id"])
        give(
            renewal_setup["client_id"],
            purpose,
            kind=EventKind.WITHDRAWN,
            method=services.Method.STAFF,
            now=services.utcnow(),
        )
    response = client.get(f"/consent/renew/{renewal_setup['token']}")
    assert response.status_code == 400
    assert "no longer applies" in response.get_data(as_text=True)


def test_the_expiry_task_offers_the_renewal_request(admin_client, app, stub_queue):
    with app.app_context():
        client = make_client(email="anna@example.com")
        purpose = make_purpose(validity_months=12, warning_days=30)
        give(client.id, purpose, now=services.utcnow() - timedelta(days=340))
        services.sweep_expiry()
        db.session.commit()
        task = db.session.scalar(select(Task).where(Task.origin == TaskOrigin.CONSENT_EXPIRY.value))
        task_id, client_id, purpose_id = task.id, client.id, purpose.id
    page = admin_client.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "Send renewal request" in page and "anna@example.com" in page
    response = admin_client.post(
        f"/clients/{client_id}/consents/{purpose_id}/renewal",
        data={"next": f"/tasks/{task_id}"},
    )
    assert response.status_code == 303 and response.headers["Location"] == f"/tasks/{task_id}"
    assert len(queued(stub_queue)) == 1
    # Nothing to renew: a clear message, no email.
    with app.app_context():
        no_email = make_client(last_name="Bez Maila").id
    response = admin_client.post(
        f"/clients/{no_email}/consents/{purpose_id}/renewal", headers={"HX-Request": "true"}
    )
    assert response.status_code == 422
    assert "no email address" in response.get_data(as_text=True)
    assert queued(stub_queue) == []
