"""The campaign pages, and the client card's "Emails" section."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event

from crm.campaigns import services
from crm.campaigns.models import Campaign, SentMessage
from crm.extensions import db
from tests.campaigns.conftest import make_campaign, make_list, subscribed_clients
from tests.conftest import login, make_user


def _form(list_id: int, **values: str) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "Wiosna",
        "subject": "Wiosenne nowości, {{ first_name }}",
        "sender_name": "Salon Łódź",
        "sender_email": "biuro@example.pl",
        "body_format": "markdown",
        "body": "Dzień dobry {{ first_name }}!",
        "list_ids": [str(list_id)],
        "saved_filter_id": "",
    }
    data.update(values)
    return data


def test_create_preview_and_send_with_the_recipient_count(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list("Nowości")
        subscribed_clients(mlist, 3, first_name="Łucja")
        list_id = mlist.id
    response = admin_client.post("/campaigns/new", data=_form(list_id))
    assert response.status_code == 302
    campaign_id = int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])

    page = admin_client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Wiosna" in page and "Nowości" in page

    preview = admin_client.get(f"/campaigns/{campaign_id}/preview").get_data(as_text=True)
    assert "Wiosenne nowości, Łucja" in preview
    assert "Dzień dobry Łucja!" in preview

    confirm = admin_client.get(f"/campaigns/{campaign_id}/send").get_data(as_text=True)
    assert "3 recipients" in confirm

    assert admin_client.post(f"/campaigns/{campaign_id}/send").status_code == 302
    progress = admin_client.get(f"/campaigns/{campaign_id}/progress", headers={"HX-Request": "1"})
    body = progress.get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in body and 'id="stat-recipients">3<' in body
    with app.app_context():
        assert services.work_on_campaign(campaign_id) == "done"
    done = admin_client.get(f"/campaigns/{campaign_id}/progress", headers={"HX-Request": "1"})
    body = done.get_data(as_text=True)
    assert "hx-trigger" not in body and 'id="stat-sent">3<' in body
    assert done.headers.get("HX-Refresh") == "true"
    assert len(smtp.messages) == 3
    # Sending twice is refused with a message, not a 500.
    again = admin_client.post(f"/campaigns/{campaign_id}/send", follow_redirects=True)
    assert again.status_code == 200
    assert "already being sent or was sent" in again.get_data(as_text=True)


def test_template_errors_are_shown_next_to_the_field(app, admin_client, smtp):
    with app.app_context():
        list_id = make_list().id
    bad = admin_client.post("/campaigns/new", data=_form(list_id, body="Hej {{ imie }}"))
    assert bad.status_code == 422
    assert "This template cannot be used" in bad.get_data(as_text=True)
    assert "imie" in bad.get_data(as_text=True)
    unsafe = admin_client.post(
        "/campaigns/new", data=_form(list_id, subject="{{ first_name.__class__ }}")
    )
    assert unsafe.status_code == 422
    broken = admin_client.post("/campaigns/new", data=_form(list_id, body="{% if %}"))
    assert broken.status_code == 422
    no_list = admin_client.post("/campaigns/new", data=_form(list_id, list_ids=[]))
    assert no_list.status_code == 422
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_html_bodies_are_sanitised(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list()
        subscribed_clients(mlist, 1)
        campaign = make_campaign(
            [mlist.id],
            body_format="html",
            body='<p onclick="x()">Hi {{ first_name }}</p><script>alert(1)</script>',
        )
        campaign_id = campaign.id
    preview = admin_client.get(f"/campaigns/{campaign_id}/preview").get_data(as_text=True)
    assert "<p>Hi Zofia</p>" in preview
    assert "alert(1)" not in preview and "onclick" not in preview


def test_test_send_goes_to_the_staff_address(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list()
        campaign_id = make_campaign([mlist.id]).id
    response = admin_client.post(
        f"/campaigns/{campaign_id}/test", data={"to": "staff@example.pl"}, follow_redirects=True
    )
    assert "Test message sent to staff@example.pl" in response.get_data(as_text=True)
    assert smtp.recipients() == ["staff@example.pl"]
    message = smtp.messages[0].parsed()
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    bad = admin_client.post(f"/campaigns/{campaign_id}/test", data={"to": "not an address"})
    assert bad.status_code == 422


def test_pause_resume_cancel_buttons(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list()
        subscribed_clients(mlist, 2)
        campaign = make_campaign([mlist.id])
        services.start_sending(campaign, campaign.created_by)
        db.session.commit()
        campaign_id = campaign.id
    assert admin_client.post(f"/campaigns/{campaign_id}/pause").status_code == 302
    page = admin_client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Paused" in page and "Resume" in page
    assert admin_client.post(f"/campaigns/{campaign_id}/resume").status_code == 302
    assert admin_client.post(f"/campaigns/{campaign_id}/cancel").status_code == 302
    refused = admin_client.post(f"/campaigns/{campaign_id}/pause", follow_redirects=True)
    assert "Only a campaign that is being sent can be paused" in refused.get_data(as_text=True)
    assert admin_client.get("/campaigns/999999").status_code == 404


def test_schedule_asks_for_a_future_time(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list()
        campaign_id = make_campaign([mlist.id]).id
    past = admin_client.post(
        f"/campaigns/{campaign_id}/schedule", data={"scheduled_at": "2000-01-01T10:00"}
    )
    assert past.status_code == 422 and "in the future" in past.get_data(as_text=True)
    garbage = admin_client.post(f"/campaigns/{campaign_id}/schedule", data={"scheduled_at": "x"})
    assert garbage.status_code == 422
    ok = admin_client.post(
        f"/campaigns/{campaign_id}/schedule", data={"scheduled_at": "2099-05-01T10:00"}
    )
    assert ok.status_code == 302
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status == "scheduled" and campaign.scheduled_at.year == 2099


def test_the_card_lists_sent_emails_with_one_query(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list()
        client = subscribed_clients(mlist, 1, first_name="Jiří")[0]
        campaign = make_campaign([mlist.id], name="Jaro v Brně")
        services.start_sending(campaign, campaign.created_by)
        db.session.commit()
        services.work_on_campaign(campaign.id)
        client_id = client.id
        message_id = db.session.scalar(
            sa.select(SentMessage.id).where(SentMessage.client_id == client_id)
        )
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        card = admin_client.get(f"/clients/{client_id}")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    html = card.get_data(as_text=True)
    assert '<article id="emails">' in html
    assert "Nowości z Łodzi dla Jiří" in html and "Jaro v Brně" in html
    assert len([s for s in statements if "sent_messages" in s]) == 1
    assert not [s for s in statements if "campaign" in s and "sent_messages" not in s]

    shown = admin_client.get(f"/campaigns/messages/{message_id}").get_data(as_text=True)
    assert "Dzień dobry Jiří" in shown
    eml = admin_client.get(f"/campaigns/messages/{message_id}.eml")
    assert eml.headers["Content-Disposition"].startswith("attachment")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in eml.data


def test_staff_without_the_permission_or_scope_are_refused(app, client, smtp):
    with app.app_context():
        mlist = make_list()
        target = subscribed_clients(mlist, 1)[0]  # owned by nobody: outside a sales scope
        campaign = make_campaign([mlist.id])
        services.start_sending(campaign, campaign.created_by)
        db.session.commit()
        services.work_on_campaign(campaign.id)
        message_id = db.session.scalar(
            sa.select(SentMessage.id).where(SentMessage.client_id == target.id)
        )
        make_user("sales@example.com", role="sales", name="Sally Sales")
    login(client, "sales@example.com")
    assert client.get("/campaigns/").status_code == 403
    assert client.post(f"/campaigns/{campaign.id}/cancel").status_code == 403
    assert client.get(f"/campaigns/messages/{message_id}").status_code == 404


def test_edit_a_draft_then_delete_it(app, admin_client, smtp):
    with app.app_context():
        mlist = make_list()
        campaign_id = make_campaign([mlist.id]).id
        list_id = mlist.id
    form = admin_client.get(f"/campaigns/{campaign_id}/edit").get_data(as_text=True)
    assert "Nowości z Łodzi" in form
    saved = admin_client.post(
        f"/campaigns/{campaign_id}/edit", data=_form(list_id, subject="Nowy temat Łódź")
    )
    assert saved.status_code == 302
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).subject == "Nowy temat Łódź"
    assert admin_client.post(f"/campaigns/{campaign_id}/delete").status_code == 302
    assert admin_client.get(f"/campaigns/{campaign_id}").status_code == 404
