"""The consent section of the client card: states, recording, withdrawal, history,
scope and permissions."""

from __future__ import annotations

from sqlalchemy import event, select

from crm.audit.models import AuditEntry
from crm.consents import services
from crm.consents.models import ConsentEvent, EventKind, Method
from crm.consents.policy import may_contact
from crm.extensions import db
from tests.conftest import login, make_client, make_user
from tests.consents.factories import T0, days, give, make_purpose

HX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/clients/1"}


def _ids(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        client = make_client(first_name="Łucja", last_name="Dvořák", email="lucja@example.com")
        purpose = make_purpose()
        notice = services.latest_notices(purpose.id)["en"]
        return client.id, purpose.id, notice.id


def test_the_card_says_when_no_purposes_exist(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    body = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert 'id="consents"' in body
    assert "No processing purposes are defined yet." in body
    assert "No consent recorded yet." in body


def test_record_by_phone_then_withdraw(admin_client, app):
    client_id, purpose_id, notice_id = _ids(app)
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Newsletter" in card and "No record" in card and "Record consent" in card

    form = admin_client.get(f"/clients/{client_id}/consents/record", headers=HX)
    text = form.get_data(as_text=True)
    assert form.status_code == 200 and 'id="consent-panel"' in text
    assert "We send you our newsletter" in text  # the chosen notice is shown

    response = admin_client.post(
        f"/clients/{client_id}/consents/record",
        data={
            "purpose_id": purpose_id,
            "kind": "given",
            "method": "phone",
            "notice_id": notice_id,
            "note": "called +48 601 234 567",
        },
        headers=HX,
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text
    assert "Given: Newsletter." in text
    assert "By phone" in text and "called +48 601 234 567" in text
    assert "notice en v1" in text
    with app.app_context():
        assert may_contact(client_id, "newsletter", "email")
        recorded = db.session.scalar(select(ConsentEvent))
        assert recorded.method == "phone" and recorded.actor_id is not None
        assert recorded.source_url == "http://localhost/clients/1"
        assert recorded.ip == "127.0.0.0"  # truncated
        audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "consent.given"))
        assert audit.client_id == client_id and audit.details["purpose"] == "newsletter"

    response = admin_client.post(f"/clients/{client_id}/consents/{purpose_id}/withdraw", headers=HX)
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Consent withdrawn: Newsletter." in text
    assert text.index("Withdrawn") < text.index("Given")  # newest first
    with app.app_context():
        assert not may_contact(client_id, "newsletter", "email")
        actions = db.session.scalars(select(AuditEntry.action)).all()
        assert "consent.withdrawn" in actions


def test_withdraw_asks_for_confirmation(admin_client, app):
    client_id, purpose_id, _notice_id = _ids(app)
    with app.app_context():
        give(client_id, db.session.get(services.ConsentPurpose, purpose_id))
    body = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert 'hx-confirm="Withdraw the consent for “Newsletter”? It stops counting at once."' in body


def test_bad_input_keeps_what_was_typed_and_never_500s(admin_client, app):
    client_id, purpose_id, notice_id = _ids(app)
    bad = admin_client.post(
        f"/clients/{client_id}/consents/record",
        data={
            "purpose_id": purpose_id,
            "kind": "given",
            "method": "telepathy",
            "notice_id": notice_id,
            "note": "kept text",
        },
        headers=HX,
    )
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "Not a valid choice" in text and 'value="kept text"' in text
    missing = admin_client.post(
        f"/clients/{client_id}/consents/record",
        data={"purpose_id": "999", "kind": "given", "method": "phone"},
        headers=HX,
    )
    assert missing.status_code == 422
    # Refusing while the consent is valid is a withdrawal: the form says so.
    with app.app_context():
        give(client_id, db.session.get(services.ConsentPurpose, purpose_id))
    refused = admin_client.post(
        f"/clients/{client_id}/consents/record",
        data={
            "purpose_id": purpose_id,
            "kind": "refused",
            "method": "phone",
            "notice_id": notice_id,
        },
        headers=HX,
    )
    assert refused.status_code == 422
    assert "The consent is valid: withdraw it instead." in refused.get_data(as_text=True)
    nothing = admin_client.post(f"/clients/{client_id}/consents/999/withdraw", headers=HX)
    assert nothing.status_code == 404


def test_without_htmx_the_forms_still_work(admin_client, app):
    client_id, purpose_id, notice_id = _ids(app)
    page = admin_client.get(f"/clients/{client_id}/consents/record?purpose_id={purpose_id}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "<html" in text and 'class="consent-form"' in text
    response = admin_client.post(
        f"/clients/{client_id}/consents/record",
        data={
            "purpose_id": purpose_id,
            "kind": "given",
            "method": "in_person",
            "notice_id": notice_id,
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/clients/{client_id}#consents")
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Given: Newsletter." in card and "In person" in card


def test_history_pages_through_older_events(admin_client, app):
    client_id, purpose_id, _notice_id = _ids(app)
    with app.app_context():
        purpose = db.session.get(services.ConsentPurpose, purpose_id)
        for n in range(12):
            give(client_id, purpose, now=T0 + days(2 * n))
            give(
                client_id,
                purpose,
                now=T0 + days(2 * n + 1),
                kind=EventKind.WITHDRAWN,
                method=Method.STAFF,
            )
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert card.count('class="consent-event ') == services.EVENT_PAGE
    assert "Show older entries" in card
    with app.app_context():
        ids = db.session.scalars(select(ConsentEvent.id).order_by(ConsentEvent.id)).all()
    older = admin_client.get(
        f"/clients/{client_id}/consents/events?before={ids[-10]}", headers=HX
    ).get_data(as_text=True)
    assert older.count('class="consent-event ') == 10 and "Show older entries" in older
    last = admin_client.get(
        f"/clients/{client_id}/consents/events?before={ids[4]}", headers=HX
    ).get_data(as_text=True)
    assert last.count('class="consent-event ') == 4 and "Show older entries" not in last
    junk = admin_client.get(f"/clients/{client_id}/consents/events?before=x", headers=HX)
    assert junk.status_code == 200


def test_the_panel_loads_in_two_queries(app):
    client_id, purpose_id, _notice_id = _ids(app)
    with app.app_context():
        purpose = db.session.get(services.ConsentPurpose, purpose_id)
        make_purpose("SMS reminders", channels=["sms"])
        for n in range(30):
            give(client_id, purpose, now=T0 + days(n), kind=EventKind.GIVEN)
    with app.test_request_context():
        statements: list[str] = []
        engine = db.session.get_bind()

        def seen(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        try:
            panel = services.consent_panel(client_id, now=T0 + days(40))
            _ = [(row.purpose.name, row.state and row.state.status) for row in panel.rows]
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2
        assert [row.purpose.name for row in panel.rows] == ["Newsletter", "SMS reminders"]
        assert len(panel.events) == services.EVENT_PAGE and panel.more is not None


def test_read_only_users_see_the_panel_but_cannot_change_it(client, app):
    client_id, purpose_id, notice_id = _ids(app)
    with app.app_context():
        give(client_id, db.session.get(services.ConsentPurpose, purpose_id))
        make_user("czytelnik@example.com", role="readonly")
    login(client, "czytelnik@example.com")
    card = client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Newsletter" in card and "Given" in card
    assert "Record consent" not in card and ">Withdraw<" not in card
    post = client.post(
        f"/clients/{client_id}/consents/record",
        data={"purpose_id": purpose_id, "kind": "given", "method": "phone", "notice_id": notice_id},
    )
    assert post.status_code == 403
    assert client.post(f"/clients/{client_id}/consents/{purpose_id}/withdraw").status_code == 403


def test_clients_outside_the_scope_answer_404(client, app):
    client_id, purpose_id, notice_id = _ids(app)  # owned by nobody: outside a sales scope
    with app.app_context():
        make_user("sprzedawca@example.com", role="sales")
    login(client, "sprzedawca@example.com")
    for path in (
        f"/clients/{client_id}/consents",
        f"/clients/{client_id}/consents/events",
        f"/clients/{client_id}/consents/record",
        f"/clients/{client_id}/consents/notice?id={notice_id}",
    ):
        assert client.get(path).status_code == 404, path
    for path in (
        f"/clients/{client_id}/consents/record",
        f"/clients/{client_id}/consents/{purpose_id}/withdraw",
        f"/clients/{client_id}/consents/{purpose_id}/renewal",
    ):
        assert client.post(path, data={"purpose_id": purpose_id}).status_code == 404, path
    with app.app_context():
        assert db.session.scalar(select(ConsentEvent)) is None


def test_changing_the_purpose_shows_that_purposes_notice(admin_client, app):
    """The record form reloads on a change of purpose (hx-get with the form's fields):
    the notice shown and offered is the new purpose's, not the previous one's."""
    with app.app_context():
        client_id = make_client(first_name="Łucja", last_name="Dvořák").id
        first = make_purpose("Angebote", notices={"pl": "Raz w tygodniu wysyłamy nowości."})
        second_id = make_purpose("Telefon", notices={"en": "Once a month we phone you."}).id
        old_notice = services.latest_notices(first.id)["pl"].id
    opened = admin_client.get(f"/clients/{client_id}/consents/record", headers=HX)
    assert "Raz w tygodniu" in opened.get_data(as_text=True)  # the first purpose
    changed = admin_client.get(
        f"/clients/{client_id}/consents/record",
        query_string={
            "purpose_id": second_id,
            "notice_id": old_notice,
            "kind": "given",
            "method": "phone",
            "note": "",
        },
        headers=HX,
    )
    text = changed.get_data(as_text=True)
    assert changed.status_code == 200
    assert "Once a month we phone you." in text and "Raz w tygodniu" not in text
