"""Restriction of processing (GDPR Art. 18): kept, not used, not changed."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from crm.attachments.models import Attachment
from crm.audit.models import AuditEntry
from crm.campaigns import services as campaigns
from crm.campaigns.models import Delivery
from crm.clients.models import Client, client_tags
from crm.consents.policy import contactable, may_contact
from crm.deals import services as deals
from crm.deals.models import Deal
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import Subscription
from crm.notes.models import Note, NoteKind
from crm.notes.services import add_note
from crm.privacy.restriction import GUARDED, lift, restrict
from crm.tasks.models import Task
from crm.tasks.services import create_task
from tests.campaigns.conftest import (
    make_campaign,
    make_list,
    smtp,  # noqa: F401 (fixture)
    smtp_server,  # noqa: F401 (fixture)
    subscribed_clients,
)
from tests.conftest import login, make_client, make_user

# Routes about one client (or a row of one) that stay open while restricted, and why.
ALLOWED = {
    "clients.card": "viewing",
    "consents.withdraw": "withdrawing is always allowed",
    "mailing.card_unsubscribe": "withdrawing is always allowed",
    "mailing.card_unsubscribe_all": "withdrawing is always allowed",
    "privacy.restrict": "lifting the restriction",
    "privacy.erase": "erasure",
    "privacy.start_export": "the person's access to their data",
    "privacy.finish_rectification": "rectification answers the contested accuracy",
    "appointments.cancel": "cancelling only stops processing",
    "appointments.sms_opt_out": "stopping SMS is always allowed (turning them on is refused)",
}
CLIENT_ARGS = {"client_id", "note_id", "attachment_id", "task_id", "deal_id", "appointment_id"}


def test_every_changing_client_route_is_guarded_or_deliberately_open(app: Flask):
    missing = []
    for rule in app.url_map.iter_rules():
        changing = bool((rule.methods or set()) - {"GET", "HEAD", "OPTIONS"})
        if not changing or not (set(rule.arguments) & CLIENT_ARGS):
            continue
        if rule.endpoint not in GUARDED and rule.endpoint not in ALLOWED:
            missing.append(rule.endpoint)
    assert missing == [], "restriction: guard these routes or list them as allowed"
    for endpoint in ("tasks.create", "deals.create"):  # the client is in the form
        assert endpoint in GUARDED
    if "appointments.book" in app.view_functions:
        assert "appointments.book" in GUARDED


@pytest.fixture
def restricted(app: Flask, admin_client: FlaskClient) -> dict[str, int]:
    """A restricted client with a note, a file, a task, a deal and a subscription."""
    with app.app_context():
        from crm.auth.models import User

        admin = db.session.scalar(sa.select(User).where(User.email == "admin@example.com"))
        mlist = make_list("Newsletter")
        [client] = subscribed_clients(mlist, 1, first_name="Jürgen", last_name="Müller")
        note = add_note(client.id, NoteKind.NOTE, "Kept as it is", admin)
        task = create_task("Call back", client_id=client.id, assignee_id=admin.id, created_by=admin)
        deal = deals.create_deal(
            title="Kitchen", client_id=client.id, stage_id=deals.all_stages()[0].id, currency="EUR"
        )
        db.session.commit()
        response = admin_client.post(
            f"/clients/{client.id}/attachments",
            data={"file": (io.BytesIO(b"%PDF-1.4 kept"), "kept.pdf")},
            content_type="multipart/form-data",
        )
        assert response.status_code in (200, 303)
        attachment_id = db.session.scalar(
            sa.select(Attachment.id).where(Attachment.client_id == client.id)
        )
        other_list = make_list("Angebote")
        client = db.session.get(Client, client.id)
        restrict(client, "Accuracy contested by the client", admin)
        db.session.commit()
        return {
            "client": client.id,
            "note": note.id,
            "task": task.id,
            "deal": deal.id,
            "attachment": attachment_id,
            "list": mlist.id,
            "other_list": other_list.id,
            "admin": admin.id,
        }


def _snapshot(client_id: int) -> tuple:
    client = db.session.get(Client, client_id)
    db.session.refresh(client)
    return (
        client.first_name,
        client.email,
        client.phone,
        dict(client.custom or {}),
        db.session.scalar(
            sa.select(sa.func.count()).select_from(Note).where(Note.client_id == client_id)
        ),
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Attachment)
            .where(Attachment.client_id == client_id)
        ),
        tuple(
            db.session.execute(
                sa.select(Task.title, Task.status).where(Task.client_id == client_id)
            )
        ),
        tuple(
            db.session.execute(
                sa.select(Deal.title, Deal.stage_id).where(Deal.client_id == client_id)
            )
        ),
        tuple(
            db.session.execute(
                sa.select(Subscription.list_id, Subscription.status).where(
                    Subscription.client_id == client_id
                )
            )
        ),
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(client_tags)
            .where(client_tags.c.client_id == client_id)
        ),
    )


def _edit_requests(ids: dict[str, int]) -> list[tuple[str, str, dict]]:
    c = ids["client"]
    return [
        ("GET", f"/clients/{c}/edit", {}),
        ("POST", f"/clients/{c}/edit", {"first_name": "Changed", "last_name": "Müller"}),
        ("GET", f"/clients/{c}/groups/name/edit", {}),
        ("POST", f"/clients/{c}/groups/name/edit", {"first_name": "Changed", "last_name": "X"}),
        ("POST", f"/clients/{c}/groups/email/edit", {"email": "changed@example.de"}),
        ("POST", f"/clients/{c}/notes", {"kind": "note", "body": "new note"}),
        ("POST", f"/notes/{ids['note']}/delete", {}),
        ("POST", f"/attachments/{ids['attachment']}/delete", {}),
        ("POST", f"/tasks/clients/{c}/new", {"title": "New", "assignee_id": str(ids["admin"])}),
        ("POST", f"/tasks/new?client_id={c}", {"title": "New", "assignee_id": str(ids["admin"])}),
        (
            "POST",
            f"/tasks/{ids['task']}/edit",
            {"title": "Edited", "assignee_id": str(ids["admin"])},
        ),
        ("POST", f"/tasks/{ids['task']}/complete", {}),
        ("POST", f"/tasks/{ids['task']}/delete", {}),
        ("POST", "/deals/new", {"title": "New deal", "client_id": str(c), "currency": "EUR"}),
        ("POST", f"/deals/{ids['deal']}/edit", {"title": "Edited", "client_id": str(c)}),
        ("POST", f"/deals/{ids['deal']}/stage", {"stage_id": "2"}),
        ("POST", f"/deals/{ids['deal']}/delete", {}),
        ("GET", f"/clients/{c}/consents/record", {}),
        ("POST", f"/clients/{c}/consents/record", {"purpose_id": "1", "kind": "given"}),
        ("POST", f"/clients/{c}/lists/subscribe", {"list_id": str(ids["other_list"])}),
        ("GET", f"/clients/{c}/delete", {}),
        ("POST", f"/clients/{c}/delete", {}),
    ]


def test_every_edit_route_refuses_and_changes_nothing(app, admin_client, restricted):
    with app.app_context():
        before = _snapshot(restricted["client"])
        entries = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    requests = _edit_requests(restricted)
    if "appointments.book" in app.view_functions:  # booking for the client
        requests.append(("GET", f"/appointments/new?client_id={restricted['client']}", {}))
    for method, url, data in requests:
        response = admin_client.open(url, method=method, data=data)
        assert response.status_code == 409, (method, url, response.status_code)
        text = response.get_data(as_text=True)
        assert "Processing restricted" in text and "lift the restriction" in text, url
        htmx = admin_client.open(url, method=method, data=data, headers={"HX-Request": "true"})
        assert htmx.status_code == 409 and htmx.headers["HX-Retarget"] == "#flash"
    with app.app_context():
        assert _snapshot(restricted["client"]) == before
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == entries


def test_mass_actions_leave_restricted_clients_out(app, admin_client, restricted):
    with app.app_context():
        free = make_client(first_name="Eva", last_name="Nováková", email="eva@example.cz")
        ids = f"{restricted['client']},{free.id}"
    confirm = admin_client.get("/search/mass", query_string={"action": "tag_add", "ids": ids})
    text = confirm.get_data(as_text=True)
    assert "1 client selected" in text and "1 selected client is restricted" in text
    done = admin_client.post("/search/mass", data={"action": "tag_add", "ids": ids, "tag": "VIP"})
    assert done.status_code in (200, 303)
    with app.app_context():
        tagged = set(db.session.scalars(sa.select(client_tags.c.client_id)))
        assert tagged == {free.id}
        entry = db.session.scalar(
            sa.select(AuditEntry).where(AuditEntry.action == "clients.mass_tag_add")
        )
        assert entry.details["count"] == 1 and entry.details["restricted_left_out"] == 1


def test_restricted_clients_are_never_contacted(app, restricted):
    with app.app_context():
        mlist = db.session.get(mailing.MailingList, restricted["list"])
        client_id = restricted["client"]
        client = db.session.get(Client, client_id)
        purpose = mlist.purpose_id
        assert not may_contact(client_id, purpose, "email")
        assert client_id not in set(
            db.session.scalars(sa.select(Client.id).where(contactable(purpose, "email")))
        )
        assert mailing.recipient_block_reason(client_id, mlist.id, client.email) == "restricted"
        assert mailing.recipient_block_reason(client_id, None, client.email) == "restricted"
        assert mailing.blocked_client_ids([client_id], mlist.id) == {client_id: "restricted"}
        assert mailing.blocked_client_ids([client_id], None) == {client_id: "restricted"}
        with pytest.raises(mailing.MailingError, match="restricted"):
            mailing.subscribe(client, db.session.get(mailing.MailingList, restricted["other_list"]))
        lift(client, None)
        db.session.commit()
        assert may_contact(client_id, purpose, "email")
        assert mailing.blocked_client_ids([client_id], mlist.id) == {}


def test_a_campaign_skips_the_restricted_subscriber_and_counts_it(app, smtp, restricted):  # noqa: F811
    with app.app_context():
        mlist = db.session.get(mailing.MailingList, restricted["list"])
        others = subscribed_clients(mlist, 3)
        restricted_email = db.session.get(Client, restricted["client"]).email
        campaign = make_campaign([mlist.id])
        assert campaigns.start_sending(campaign, campaign.created_by) == 4
        db.session.commit()
        assert campaigns.work_on_campaign(campaign.id) == "done"
        row = db.session.scalar(
            sa.select(Delivery).where(
                Delivery.campaign_id == campaign.id, Delivery.client_id == restricted["client"]
            )
        )
        assert (row.status, row.skip_reason) == ("skipped", "restricted")
        stats = campaigns.campaign_stats(campaign.id)
        assert (stats.sent, stats.skipped) == (3, 1)
        other_emails = {c.email for c in others}
    assert restricted_email not in smtp.recipients()
    assert set(smtp.recipients()) == other_emails


def test_the_unsubscribe_link_and_withdrawals_keep_working(app, client, restricted):
    with app.app_context():
        url = mailing.unsubscribe_url(restricted["client"], restricted["list"])
    path = urlsplit(url).path
    assert client.get(path).status_code == 200
    response = client.post(
        path, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    with app.app_context():
        sub = mailing.get_subscription(restricted["client"], restricted["list"])
        assert sub.status == "unsubscribed"


def test_card_banner_restrict_form_and_lifting(app, admin_client, restricted):
    card = admin_client.get(f"/clients/{restricted['client']}").get_data(as_text=True)
    assert "restriction-banner" in card and "Accuracy contested by the client" in card
    assert "Edit all" not in card  # no inline editors either
    # Nor forms that would only answer 409: new note, file upload, new deal, stage moves.
    for marker in (
        'class="note-form"',
        'class="upload-form"',
        "Add deal",
        'class="stage-form"',
        "Add task",
    ):
        assert marker not in card, marker
    page = admin_client.get(f"/clients/{restricted['client']}/restriction")
    assert page.status_code == 200 and "Lift the restriction" in page.get_data(as_text=True)
    lifted = admin_client.post(f"/clients/{restricted['client']}/restriction", data={})
    assert lifted.status_code == 302
    card = admin_client.get(f"/clients/{restricted['client']}").get_data(as_text=True)
    assert "restriction-banner" not in card and "Edit all" in card
    for marker in (
        'class="note-form"',
        'class="upload-form"',
        "Add deal",
        'class="stage-form"',
        "Add task",
    ):
        assert marker in card, marker
    edited = admin_client.post(
        f"/clients/{restricted['client']}/groups/name/edit",
        data={"first_name": "Jürgen", "last_name": "Müller-Lüdenscheidt"},
    )
    assert edited.status_code == 200
    # Restricting again needs a reason, shown next to the field.
    empty = admin_client.post(f"/clients/{restricted['client']}/restriction", data={"reason": " "})
    assert empty.status_code == 422
    assert "Say why processing is restricted." in empty.get_data(as_text=True)
    again = admin_client.post(
        f"/clients/{restricted['client']}/restriction",
        data={"reason": "Objection pending (Art. 21)"},
    )
    assert again.status_code == 302
    with app.app_context():
        client = db.session.get(Client, restricted["client"])
        assert client.last_name == "Müller-Lüdenscheidt"
        assert client.restriction_reason == "Objection pending (Art. 21)"
        actions = list(
            db.session.scalars(
                sa.select(AuditEntry.action)
                .where(AuditEntry.client_id == client.id, AuditEntry.action.like("client.restr%"))
                .order_by(AuditEntry.id)
            )
        )
        assert actions == ["client.restrict", "client.restriction_lift", "client.restrict"]


def test_restricting_is_for_request_managers_only(app, restricted):
    with app.app_context():
        make_user("sales@example.com", role="sales", name="Sam Sales")
    client = app.test_client()
    login(client, "sales@example.com")
    assert client.get(f"/clients/{restricted['client']}/restriction").status_code == 403
    assert client.post(f"/clients/{restricted['client']}/restriction", data={}).status_code == 403
    with app.app_context():
        assert db.session.get(Client, restricted["client"]).restricted_at is not None
