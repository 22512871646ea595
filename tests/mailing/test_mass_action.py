""" "Add to a mailing list" among the client list's mass actions: set-based, through the
ledger, within the user's scope, skipping unsubscribed and suppressed addresses."""

from __future__ import annotations

from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.consents.models import ConsentEvent
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import OptIn
from tests.conftest import make_client
from tests.mailing.factories import make_list

HX = {"HX-Request": "true"}


def test_add_matching_clients_to_a_list(app, admin_client):
    with app.app_context():
        mlist = make_list("Zpravodaj")
        make_list("Double", opt_in=OptIn.DOUBLE)
        a = make_client(city="Łódź", email="a@example.pl")
        b = make_client(city="Łódź", email="b@example.pl")
        gone = make_client(city="Łódź", email="gone@example.pl")
        make_client(city="Łódź", email="")
        make_client(city="Brno", email="brno@example.cz")
        services.subscribe(gone, mlist)
        db.session.commit()
        services.unsubscribe(services.get_subscription(gone.id, mlist.id))
        db.session.commit()
        ids = (mlist.id, a.id, b.id, gone.id)
    confirm = admin_client.get(
        "/search/mass",
        query_string={"action": "list_add", "all": "1", "q": 'city = "Łódź"'},
        headers=HX,
    )
    text = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "Zpravodaj" in text and "Double" not in text
    assert "Add 4 clients to the list" in text
    done = admin_client.post(
        "/search/mass",
        data={"action": "list_add", "all": "1", "q": 'city = "Łódź"', "list_id": ids[0]},
    )
    assert done.status_code in (204, 303)
    with app.app_context():
        audience = set(db.session.scalars(services.audience_client_ids([ids[0]])))
        assert audience == {ids[1], ids[2]}  # the unsubscribed one stays out
        assert services.get_subscription(ids[3], ids[0]).status == "unsubscribed"
        methods = db.session.scalars(
            select(ConsentEvent.method).where(ConsentEvent.client_id.in_(ids[1:3]))
        ).all()
        assert methods == ["staff", "staff"]
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "clients.mass_list_add")
        )
        assert entry.details["count"] == 2 and entry.details["list"] == "Zpravodaj"
    bad = admin_client.post(
        "/search/mass", data={"action": "list_add", "ids": [ids[1]], "list_id": "999"}, headers=HX
    )
    assert bad.status_code == 422 and "Pick a list." in bad.get_data(as_text=True)
