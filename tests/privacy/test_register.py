"""The request register over HTTP: registering, validation, the list with its filters,
the request page (extend, close), linking a client later, scope, the card's privacy
section and the dashboard."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.auth.models import Role
from crm.clients.models import Client
from crm.extensions import db
from crm.privacy.models import DataRequest, RequestStatus
from crm.privacy.services import due_date, org_date
from tests.conftest import login, make_client, make_user
from tests.privacy.conftest import make_request
from tests.tasks.factories import make_task

HX = {"HX-Request": "true"}


def _today(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return org_date()


def _requests(app) -> list[DataRequest]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(db.session.scalars(select(DataRequest).order_by(DataRequest.id)))


def _entries(app, action: str) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with app.app_context():
        stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list(db.session.scalars(stmt))


def _own_scope_user(app, email: str = "rodo@example.com"):  # type: ignore[no-untyped-def]
    """A user who handles requests but sees only their own clients."""
    with app.app_context():
        db.session.add(
            Role(
                name="privacy-own",
                permissions=["clients:view", "clients:edit", "tasks:view", "requests:manage"],
                client_scope="own",
            )
        )
        db.session.commit()
        return make_user(email, role="privacy-own", name="Ola Own").id


# --- registering ----------------------------------------------------------------------------


def test_register_a_request_from_the_card(admin_client, app):
    with app.app_context():
        client_id = make_client(first_name="Jürgen", last_name="Müller", city="Łódź").id
    form = admin_client.get(f"/privacy/requests/new?client_id={client_id}")
    html = form.get_data(as_text=True)
    assert form.status_code == 200
    assert "Jürgen Müller" in html and f'value="{client_id}" checked' in html
    today = _today(app)
    response = admin_client.post(
        "/privacy/requests/new",
        data={
            "kind": "access",
            "received_on": today.isoformat(),
            "channel": "email",
            "client_id": str(client_id),
            "requester": "",
            "details": "Wants a copy of everything — łącznie z notatkami",
            "identity_check": "",
            "assignee_id": "",
        },
    )
    assert response.status_code == 302
    [created] = _requests(app)
    assert response.headers["Location"].endswith(f"/privacy/requests/{created.id}")
    assert created.client_id == client_id and created.subject_ref == client_id
    assert created.requester == "Jürgen Müller"  # taken from the client
    assert created.due_on == due_date(today)
    assert created.status == RequestStatus.OPEN.value
    assert created.details == "Wants a copy of everything — łącznie z notatkami"
    [entry] = _entries(app, "request.create")
    assert entry.client_id == client_id and entry.target_id == created.id
    assert entry.details["due_on"] == due_date(today).isoformat()
    page = admin_client.get(f"/privacy/requests/{created.id}").get_data(as_text=True)
    assert "łącznie z notatkami" in page and "Not recorded yet." in page


def test_a_request_may_come_before_the_client_is_matched(admin_client, app):
    today = _today(app)
    response = admin_client.post(
        "/privacy/requests/new",
        data={
            "kind": "erasure",
            "received_on": today.isoformat(),
            "channel": "letter",
            "requester": "  Zdeněk   Dvořák ",
        },
    )
    assert response.status_code == 302
    [created] = _requests(app)
    assert created.client_id is None and created.requester == "Zdeněk Dvořák"
    # Linked later, through the edit form; the audit entry names the change.
    with app.app_context():
        client_id = make_client(first_name="Zdeněk", last_name="Dvořák").id
    options = admin_client.get("/privacy/requests/clients?q=dvorak", headers=HX)
    assert f'value="{client_id}"' in options.get_data(as_text=True)
    edited = admin_client.post(
        f"/privacy/requests/{created.id}/edit",
        data={
            "kind": "erasure",
            "received_on": today.isoformat(),
            "channel": "letter",
            "requester": "Zdeněk Dvořák",
            "client_id": str(client_id),
        },
    )
    assert edited.status_code == 302
    [linked] = _requests(app)
    assert linked.client_id == client_id
    [entry] = _entries(app, "request.update")
    assert entry.details["changes"] == {"client_id": [None, client_id]}
    assert entry.client_id == client_id


def test_bad_input_is_explained_next_to_the_fields(admin_client, app):
    today = _today(app)
    missing = admin_client.post("/privacy/requests/new", data={"kind": "", "received_on": ""})
    html = missing.get_data(as_text=True)
    assert missing.status_code == 200
    assert "Choose what the person asks for." in html
    assert "Enter the date the request arrived." in html
    future = admin_client.post(
        "/privacy/requests/new",
        data={
            "kind": "access",
            "channel": "email",
            "received_on": (today + timedelta(days=1)).isoformat(),
            "requester": "Anna",
        },
    )
    assert "cannot be received in the future" in future.get_data(as_text=True)
    nobody = admin_client.post(
        "/privacy/requests/new",
        data={"kind": "access", "channel": "email", "received_on": today.isoformat()},
    )
    assert "Name who made the request, or choose the client." in nobody.get_data(as_text=True)
    forged = admin_client.post(
        "/privacy/requests/new",
        data={
            "kind": "access",
            "channel": "email",
            "received_on": today.isoformat(),
            "client_id": "999999",
        },
    )
    assert "Choose a client from the search results." in forged.get_data(as_text=True)
    unknown_kind = admin_client.post(
        "/privacy/requests/new",
        data={"kind": "teleport", "channel": "x", "received_on": "31.02.2026", "requester": "A"},
    )
    assert unknown_kind.status_code == 200
    assert _requests(app) == []


# --- the list -----------------------------------------------------------------------------


def test_the_register_lists_open_requests_by_deadline_overdue_in_red(admin_client, app):
    today = _today(app)
    with app.app_context():
        client = make_client(first_name="Łucja")
        overdue = make_request(client=client, received_on=today - timedelta(days=40)).id
        soon = make_request("portability", received_on=today - timedelta(days=28)).id
        later = make_request("objection", received_on=today).id
        done = make_request(status="done", outcome="Sent", received_on=today).id
    html = admin_client.get("/privacy/requests").get_data(as_text=True)
    rows = re.findall(r'<tr class="([^"]*)">\s*<td><a href="/privacy/requests/(\d+)"', html)
    assert [int(r[1]) for r in rows] == [overdue, soon, later]
    assert dict((int(i), c) for c, i in rows) == {overdue: "overdue", soon: "due-soon", later: ""}
    assert "Łucja" in html
    overdue_tab = admin_client.get("/privacy/requests?status=overdue", headers=HX)
    assert re.findall(r'href="/privacy/requests/(\d+)">#', overdue_tab.get_data(as_text=True)) == [
        str(overdue)
    ]
    answered = admin_client.get("/privacy/requests?status=done").get_data(as_text=True)
    assert f'href="/privacy/requests/{done}"' in answered
    by_kind = admin_client.get("/privacy/requests?kind=portability&status=all").get_data(
        as_text=True
    )
    assert re.findall(r'href="/privacy/requests/(\d+)">#', by_kind) == [str(soon)]
    # Unknown filters fall back rather than fail.
    assert admin_client.get("/privacy/requests?status=nope&kind=nope&page=x").status_code == 200


def test_the_register_pages(admin_client, app):
    with app.app_context():
        for _ in range(52):
            make_request()
    first = admin_client.get("/privacy/requests").get_data(as_text=True)
    assert len(re.findall(r'href="/privacy/requests/\d+">#', first)) == 50
    assert "Page 1 of 2" in first
    second = admin_client.get("/privacy/requests?page=2").get_data(as_text=True)
    assert len(re.findall(r'href="/privacy/requests/\d+">#', second)) == 2


def test_an_empty_register_says_what_it_is_for(admin_client):
    html = admin_client.get("/privacy/requests").get_data(as_text=True)
    assert "No open requests" in html and "/privacy/requests/new" in html


# --- scope and permissions ------------------------------------------------------------------


def test_requests_about_clients_outside_the_scope_are_not_found(client, app):
    user_id = _own_scope_user(app)
    with app.app_context():
        mine = make_client(first_name="Moja", owner_id=user_id)
        theirs = make_client(first_name="Obca")
        mine_id = make_request(client=mine).id
        theirs_id = make_request(client=theirs).id
        unmatched_id = make_request(requester="Nieznany").id
        theirs_client = theirs.id
    login(client, "rodo@example.com")
    html = client.get("/privacy/requests").get_data(as_text=True)
    assert f'/privacy/requests/{mine_id}"' in html
    assert f'/privacy/requests/{unmatched_id}"' in html
    assert f'/privacy/requests/{theirs_id}"' not in html
    assert client.get(f"/privacy/requests/{theirs_id}").status_code == 404
    assert client.get(f"/privacy/requests/{theirs_id}/edit").status_code == 404
    assert client.post(f"/privacy/requests/{theirs_id}/close", data={}).status_code == 404
    assert client.get(f"/privacy/requests/new?client_id={theirs_client}").status_code == 404
    assert client.get(f"/clients/{theirs_client}/privacy").status_code == 404
    options = client.get("/privacy/requests/clients?q=obca").get_data(as_text=True)
    assert "Obca" not in options


def test_staff_without_the_permission_see_no_register(client, app):
    with app.app_context():
        sales = make_user("handlowiec@example.com", role="sales", name="Sales")
        client_id = make_client(owner_id=sales.id).id
        make_request(client=db.session.get(Client, client_id))
    login(client, "handlowiec@example.com")
    assert client.get("/privacy/requests").status_code == 403
    assert client.get("/privacy/requests/new").status_code == 403
    section = client.get(f"/clients/{client_id}/privacy", headers=HX)
    assert section.status_code == 200
    body = section.get_data(as_text=True)
    assert "Processing is not restricted." in body and "New request" not in body
    assert "/privacy/requests/" not in body  # the requests are for those who answer them
    assert 'href="/privacy/requests"' not in client.get("/").get_data(as_text=True)


# --- the request page: extend and close ---------------------------------------------------


def test_extend_over_http_and_refused_after_the_deadline(admin_client, app):
    today = _today(app)
    with app.app_context():
        open_id = make_request(received_on=today).id
        late_id = make_request(received_on=today - timedelta(days=40)).id
    due = due_date(today)
    no_reason = admin_client.post(
        f"/privacy/requests/{open_id}/extend",
        data={"until": (due + timedelta(days=20)).isoformat(), "reason": ""},
    )
    assert "Say why more time is needed." in no_reason.get_data(as_text=True)
    too_far = admin_client.post(
        f"/privacy/requests/{open_id}/extend",
        data={"until": (due + timedelta(days=70)).isoformat(), "reason": "Backlog"},
    )
    assert "At most two months after the original due date" in too_far.get_data(as_text=True)
    ok = admin_client.post(
        f"/privacy/requests/{open_id}/extend",
        data={"until": (due + timedelta(days=20)).isoformat(), "reason": "Backlog"},
    )
    assert ok.status_code == 302
    page = admin_client.get(f"/privacy/requests/{open_id}").get_data(as_text=True)
    assert "Backlog" in page and "Extended from" in page
    late_page = admin_client.get(f"/privacy/requests/{late_id}").get_data(as_text=True)
    assert "An extension had to be made before it" in late_page
    refused = admin_client.post(
        f"/privacy/requests/{late_id}/extend",
        data={"until": (today + timedelta(days=5)).isoformat(), "reason": "Too late"},
    )
    assert refused.status_code == 200
    assert "an extension had to be made before it" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(DataRequest, late_id).extended_until is None
    assert len(_entries(app, "request.extend")) == 1


def test_close_needs_an_outcome_and_an_identity_check(admin_client, app):
    with app.app_context():
        request_id = make_request().id
        task_id = make_task(
            "Answer", origin="data_request", origin_ref=f"request:{request_id}:2030-04-01"
        ).id
    no_outcome = admin_client.post(
        f"/privacy/requests/{request_id}/close", data={"status": "done", "outcome": " "}
    )
    assert "Describe the outcome" in no_outcome.get_data(as_text=True)
    unchecked = admin_client.post(
        f"/privacy/requests/{request_id}/close", data={"status": "done", "outcome": "Sent"}
    )
    assert "identity was checked" in unchecked.get_data(as_text=True)
    assert _requests(app)[0].is_open
    refused = admin_client.post(
        f"/privacy/requests/{request_id}/close",
        data={
            "status": "refused",
            "outcome": "Identity could not be confirmed; may complain to UODO.",
        },
    )
    assert refused.status_code == 302
    [closed] = _requests(app)
    assert closed.status == "refused" and closed.closed_at is not None
    assert closed.outcome.startswith("Identity could not be confirmed")
    [entry] = _entries(app, "request.close")
    assert entry.details["status"] == "refused"
    with app.app_context():
        from crm.tasks.models import Task

        assert not db.session.get(Task, task_id).is_open
    again = admin_client.post(
        f"/privacy/requests/{request_id}/close",
        data={"status": "done", "outcome": "x"},
        follow_redirects=True,
    )
    assert "closed already" in again.get_data(as_text=True)
    assert _requests(app)[0].status == "refused"
    edit = admin_client.get(f"/privacy/requests/{request_id}/edit")
    assert edit.status_code == 302  # a closed record stays as it was


def test_missing_requests_are_not_found(admin_client):
    assert admin_client.get("/privacy/requests/999999").status_code == 404
    assert admin_client.post("/privacy/requests/999999/extend").status_code == 404
    assert admin_client.get("/privacy/requests/new?client_id=abc").status_code == 404


# --- the card section ----------------------------------------------------------------------


def test_the_card_loads_its_privacy_section_lazily(admin_client, app):
    today = _today(app)
    with app.app_context():
        client = make_client(first_name="Dvořák")
        client.restriction_reason = "Accuracy contested"
        from crm.sqltypes import utcnow

        client.restricted_at = utcnow()
        db.session.commit()
        client_id = client.id
        open_id = make_request(client=client, received_on=today - timedelta(days=35)).id
        closed_id = make_request(
            client=client, status="done", outcome="Sent", closed_at=utcnow()
        ).id
        make_request(requester="Someone else")
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert f'hx-get="/clients/{client_id}/privacy"' in card and 'hx-trigger="load"' in card
    assert f"/privacy/requests/{open_id}" not in card  # not paid for by the card itself
    section = admin_client.get(f"/clients/{client_id}/privacy", headers=HX)
    body = section.get_data(as_text=True)
    assert section.status_code == 200 and "<html" not in body
    assert "Processing restricted" in body and "Accuracy contested" in body
    assert f"/privacy/requests/{open_id}" in body and "overdue" in body
    assert f"/privacy/requests/{closed_id}" in body and "Recently closed" in body
    assert f"/privacy/requests/new?client_id={client_id}" in body
    page = admin_client.get(f"/clients/{client_id}/privacy")
    assert "<html" in page.get_data(as_text=True)


# --- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_shows_requests_and_my_tasks(admin_client, app):
    today = _today(app)
    with app.app_context():
        from crm.auth.services import find_user

        admin_id = find_user("admin@example.com").id
        overdue = make_request(received_on=today - timedelta(days=40)).id
        soon = make_request(received_on=today - timedelta(days=27)).id
        make_task("Zadzwonić do pani Wiśniewskiej", assignee_id=admin_id, due_date=today)
        make_task("Someone else's", assignee_id=None)
    response = admin_client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Open data-subject requests" in html and "1 overdue" in html
    assert re.search(
        rf'<li class="overdue">\s*<span class="grow"><a href="/privacy/requests/{overdue}"', html
    )
    assert re.search(
        rf'<li class="due-soon">\s*<span class="grow"><a href="/privacy/requests/{soon}"', html
    )
    assert "Zadzwonić do pani Wiśniewskiej" in html and "Someone else" not in html
    assert 'href="/privacy/requests"' in html  # the nav link


def test_the_dashboard_without_requests_permission(client, app):
    with app.app_context():
        make_user("handlowiec@example.com", role="sales", name="Sales")
    login(client, "handlowiec@example.com")
    html = client.get("/").get_data(as_text=True)
    assert "My open tasks" in html and "No open tasks are assigned to you." in html
    assert "data-subject requests" not in html


@pytest.mark.parametrize("path", ["/privacy/requests", "/privacy/requests/new", "/"])
def test_register_pages_render_for_managers(client, app, path):
    with app.app_context():
        make_user("kierownik@example.com", role="manager", name="Kierownik")
    login(client, "kierownik@example.com")
    assert client.get(path).status_code == 200


def test_closing_through_htmx_redirects_the_page_or_shows_the_errors_in_place(admin_client, app):
    with app.app_context():
        request_id = make_request(identity_check="Signed letter matches the card").id
    url = f"/privacy/requests/{request_id}/close"
    page = admin_client.get(f"/privacy/requests/{request_id}").get_data(as_text=True)
    assert 'hx-confirm="Close request #' in page
    refused = admin_client.post(url, data={"status": "", "outcome": ""}, headers=HX)
    assert refused.status_code == 200
    body = refused.get_data(as_text=True)
    assert 'id="close"' in body and "Choose whether the request was answered or refused." in body
    done = admin_client.post(url, data={"status": "done", "outcome": "Export sent"}, headers=HX)
    assert done.headers["HX-Redirect"] == f"/privacy/requests/{request_id}"
    assert _requests(app)[0].status == "done"
    shown = admin_client.get(f"/privacy/requests/{request_id}").get_data(as_text=True)
    assert f"Request #{request_id} closed." in shown


def test_the_card_pays_no_query_for_requests(admin_client, app):
    """The card's own request costs the same with or without requests (and with the
    rectification banner on): the section loads separately."""
    from sqlalchemy import event

    with app.app_context():
        client = make_client(first_name="Mia")
        client_id = client.id
        rectification = make_request("rectification", client=client).id
        engine = db.engine

    def card_queries() -> tuple[int, int]:
        statements: list[str] = []

        def count(*args):  # type: ignore[no-untyped-def]
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            assert admin_client.get(f"/clients/{client_id}").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements), len([s for s in statements if "privacy_requests" in s])

    card_queries()  # the first request of the process loads the shared settings
    total, about_requests = card_queries()
    assert total > 0 and about_requests == 0
    with app.app_context():
        for _ in range(3):
            make_request(client=db.session.get(Client, client_id))
    admin_client.post(f"/privacy/requests/{rectification}/rectification")
    assert card_queries() == (total, 0)
