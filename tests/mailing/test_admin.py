"""The list admin pages and the card's list section: validation, confirmations,
counts, paging, permissions, escaping, and the card's one query."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.consents.models import ConsentEvent
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import ListGroup, MailingList
from tests.conftest import login, make_client, make_user
from tests.consents.factories import make_purpose
from tests.mailing.factories import make_group, make_list

XSS = "<script>alert(1)</script>"


def test_create_edit_archive_list(app, admin_client):
    with app.app_context():
        purpose_id = make_purpose().id
        group_id = make_group("Zpravodaj").id
    page = admin_client.get("/admin/lists/new")
    assert page.status_code == 200 and "Newsletter" in page.get_data(as_text=True)
    missing = admin_client.post("/admin/lists/new", data={"name": "", "opt_in": "single"})
    assert missing.status_code == 200
    assert "This field is required." in missing.get_data(as_text=True)
    data = {
        "name": "Zpravodaj Brno",
        "description": "Jednou měsíčně z Brna.",
        "group_id": str(group_id),
        "opt_in": "double",
        "purpose_id": str(purpose_id),
    }
    created = admin_client.post("/admin/lists/new", data=data)
    assert created.status_code == 302
    dup = admin_client.post("/admin/lists/new", data={**data, "name": "zpravodaj brno"})
    assert "already a list with this name" in dup.get_data(as_text=True)
    bad_group = admin_client.post("/admin/lists/new", data={**data, "name": "X", "group_id": "999"})
    assert "Pick a group from the list." in bad_group.get_data(as_text=True)
    with app.app_context():
        mlist = db.session.scalar(select(MailingList))
        assert (mlist.opt_in, mlist.group_id, mlist.purpose_id) == ("double", group_id, purpose_id)
        list_id = mlist.id
    edited = admin_client.post(
        f"/admin/lists/{list_id}", data={**data, "name": "Zpravodaj Ostrava"}
    )
    assert edited.status_code == 302
    index = admin_client.get("/admin/lists/").get_data(as_text=True)
    assert "Zpravodaj Ostrava" in index and "Archive “Zpravodaj Ostrava”?" in index
    archived = admin_client.post(f"/admin/lists/{list_id}/archive", headers={"HX-Request": "true"})
    assert archived.status_code == 204
    with app.app_context():
        assert db.session.get(MailingList, list_id).is_archived
        actions = set(db.session.scalars(select(AuditEntry.action)))
        assert {"mailing.list_create", "mailing.list_update", "mailing.list_archive"} <= actions
    admin_client.post(f"/admin/lists/{list_id}/archive", data={"restore": "1"})
    with app.app_context():
        assert not db.session.get(MailingList, list_id).is_archived


def test_groups_and_escaping(app, admin_client):
    created = admin_client.post("/admin/lists/groups/new", data={"name": XSS, "description": XSS})
    assert created.status_code == 302
    assert admin_client.post("/admin/lists/groups/new", data={"name": XSS}).status_code == 200
    with app.app_context():
        group_id = db.session.scalar(select(ListGroup.id))
        make_list(XSS, group=db.session.get(ListGroup, group_id), description=XSS)
    text = admin_client.get("/admin/lists/").get_data(as_text=True)
    assert XSS not in text and "&lt;script&gt;" in text
    edited = admin_client.post(f"/admin/lists/groups/{group_id}", data={"name": "Noviny"})
    assert edited.status_code == 302
    admin_client.post(f"/admin/lists/groups/{group_id}/archive")
    with app.app_context():
        assert db.session.get(ListGroup, group_id).is_archived


def test_counts_and_paged_subscribers(app, admin_client):
    with app.app_context():
        mlist = make_list()
        clients = [
            make_client(last_name=f"Dvořák {i:02}", email=f"d{i}@example.cz") for i in range(55)
        ]
        for c in clients:
            services.subscribe(c, mlist)
        db.session.commit()
        services.unsubscribe(services.get_subscription(clients[0].id, mlist.id))
        db.session.commit()
        list_id = mlist.id
    index = admin_client.get("/admin/lists/").get_data(as_text=True)
    assert ">54<" in index and ">1<" in index
    first = admin_client.get(f"/admin/lists/{list_id}/subscribers").get_data(as_text=True)
    assert "Page 1 of 2" in first and "Dvořák 00" in first
    second = admin_client.get(f"/admin/lists/{list_id}/subscribers?page=2").get_data(as_text=True)
    assert "Dvořák 54" in second
    only = admin_client.get(f"/admin/lists/{list_id}/subscribers?status=unsubscribed")
    assert "Dvořák 01" not in only.get_data(as_text=True)
    assert admin_client.get("/admin/lists/999/subscribers").status_code == 404


def test_sales_may_use_the_card_but_not_manage_lists(app, client):
    with app.app_context():
        user = make_user("sales@example.com", role="sales", name="Sales")
        mine = make_client(email="mine@example.pl", owner_id=user.id)
        other = make_client(email="other@example.pl")
        list_id = make_list().id
        ids = (mine.id, other.id)
    login(client, "sales@example.com")
    assert client.get("/admin/lists/").status_code == 403
    assert client.post("/admin/lists/new", data={"name": "x"}).status_code == 403
    ok = client.post(
        f"/clients/{ids[0]}/lists/subscribe",
        data={"list_id": list_id},
        headers={"HX-Request": "true"},
    )
    assert ok.status_code == 200 and "Subscribed to “Newsletter PL”." in ok.get_data(as_text=True)
    # Outside the sales scope: 404, nothing recorded.
    assert (
        client.post(f"/clients/{ids[1]}/lists/subscribe", data={"list_id": list_id}).status_code
        == 404
    )
    with app.app_context():
        assert services.get_subscription(ids[1], list_id) is None
        event = db.session.scalar(select(ConsentEvent))
        assert event.method == "staff" and event.client_id == ids[0]


def test_card_section_subscribe_and_unsubscribe(app, admin_client):
    with app.app_context():
        client_id = make_client(first_name="Łukasz", email="lukasz@example.pl").id
        list_id = make_list(XSS).id
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert 'id="lists"' in card and "Not on any mailing list." in card
    assert "Mailing list memberships" not in card and XSS not in card
    done = admin_client.post(
        f"/clients/{client_id}/lists/subscribe",
        data={"list_id": list_id},
        headers={"HX-Request": "true"},
    )
    body = done.get_data(as_text=True)
    assert 'id="lists-body"' in body and "Subscribed" in body and XSS not in body
    assert "hx-confirm" in body
    # The section's count in the header follows the change (out-of-band swap).
    assert '<span id="lists-count" class="count" hx-swap-oob="true">1</span>' in body
    bad = admin_client.post(
        f"/clients/{client_id}/lists/subscribe",
        data={"list_id": "abc"},
        headers={"HX-Request": "true"},
    )
    assert bad.status_code == 422 and "Pick a list." in bad.get_data(as_text=True)
    gone = admin_client.post(
        f"/clients/{client_id}/lists/{list_id}/unsubscribe", headers={"HX-Request": "true"}
    )
    assert gone.status_code == 200 and "Unsubscribed from" in gone.get_data(as_text=True)
    assert admin_client.post(f"/clients/{client_id}/lists/999/unsubscribe").status_code == 404
    # Without htmx: back to the card.
    again = admin_client.post(f"/clients/{client_id}/lists/subscribe", data={"list_id": list_id})
    assert again.status_code == 302 and again.headers["Location"].endswith("#lists")
    alone = admin_client.get(f"/clients/{client_id}/lists")
    assert alone.status_code == 200 and "Łukasz" in alone.get_data(as_text=True)


def test_the_card_section_costs_one_query(app, admin_client):
    with app.app_context():
        client = make_client(email="q@example.pl")
        for name in ("A", "B", "C"):
            services.subscribe(client, make_list(name))
        db.session.commit()
        client_id = client.id
    with app.app_context():
        statements: list[str] = []
        engine = db.session.get_bind()

        def capture(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            statements.append(statement)

        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            section = services.card_section(client_id)
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)
    assert len([s for s in statements if not s.startswith("SAVEPOINT")]) == 1
    assert [r.list_name for r in section.subscribed] == ["A", "B", "C"]
    assert admin_client.get(f"/clients/{client_id}").status_code == 200
