"""Rectification under a request: "Edit the card under this request" turns on a mode
in which every change of that card is linked to the request in the audit log (with
its before/after diff), and the request page lists those changes."""

from __future__ import annotations

from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.extensions import db
from crm.privacy.models import DataRequest
from tests.conftest import login, make_client, make_user
from tests.privacy.conftest import make_request

HX = {"HX-Request": "true"}


def _updates(app, client_id: int) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with app.app_context():
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.action == "client.update", AuditEntry.client_id == client_id)
            .order_by(AuditEntry.id)
        )
        return list(db.session.scalars(stmt))


def _setup(app, kind: str = "rectification"):  # type: ignore[no-untyped-def]
    with app.app_context():
        client = make_client(first_name="Zofia", last_name="Wiśniewska", email="stary@example.pl")
        request_id = make_request(kind, client=client, details="Nowy adres e-mail").id
        return client.id, request_id


def test_an_edit_under_a_request_is_linked_and_shown_with_before_and_after(admin_client, app):
    client_id, request_id = _setup(app)
    page = admin_client.get(f"/privacy/requests/{request_id}").get_data(as_text=True)
    assert "Edit the card under this request" in page
    started = admin_client.post(f"/privacy/requests/{request_id}/rectification")
    assert started.status_code == 302
    assert started.headers["Location"].endswith(f"/clients/{client_id}")
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert f"recorded under data request #{request_id}" in card
    assert f"/clients/{client_id}/rectification/finish" in card

    saved = admin_client.post(
        f"/clients/{client_id}/groups/email/edit",
        data={"email": "nowy.łódź@example.pl"},
        headers=HX,
    )
    assert saved.status_code == 200
    admin_client.post(
        f"/clients/{client_id}/groups/address/edit",
        data={"street": "ul. Piotrkowska 1", "postal_code": "90-001", "city": "Łódź"},
        headers=HX,
    )
    first, second = _updates(app, client_id)
    assert first.details["request_id"] == request_id
    assert first.details["changes"] == {"email": ["stary@example.pl", "nowy.łódź@example.pl"]}
    assert second.details["request_id"] == request_id
    assert second.details["changes"]["city"] == ["", "Łódź"]

    page = admin_client.get(f"/privacy/requests/{request_id}").get_data(as_text=True)
    assert "Changes made under this request" in page
    assert "stary@example.pl" in page and "nowy.łódź@example.pl" in page
    assert "Piotrkowska" in page
    assert "You are editing the card under this request" in page

    # Finish: the banner goes, and later edits are plain edits again.
    finished = admin_client.post(f"/clients/{client_id}/rectification/finish")
    assert finished.headers["Location"].endswith(f"/privacy/requests/{request_id}")
    assert "recorded under data request" not in admin_client.get(f"/clients/{client_id}").get_data(
        as_text=True
    )
    admin_client.post(
        f"/clients/{client_id}/groups/phone/edit", data={"phone": "+48 601 234 567"}, headers=HX
    )
    assert "request_id" not in _updates(app, client_id)[-1].details


def test_the_full_edit_form_is_linked_too(admin_client, app):
    client_id, request_id = _setup(app)
    admin_client.post(f"/privacy/requests/{request_id}/rectification")
    response = admin_client.post(
        f"/clients/{client_id}/edit",
        data={"first_name": "Zofia", "last_name": "Dvořák-Wiśniewska", "email": "stary@example.pl"},
    )
    assert response.status_code == 302
    [entry] = _updates(app, client_id)
    assert entry.details["request_id"] == request_id
    assert entry.details["changes"]["last_name"] == ["Wiśniewska", "Dvořák-Wiśniewska"]


def test_edits_without_the_mode_and_of_other_clients_are_not_linked(admin_client, app):
    client_id, request_id = _setup(app)
    with app.app_context():
        other_id = make_client(first_name="Jürgen", email="j@example.de").id
    admin_client.post(f"/clients/{client_id}/groups/email/edit", data={"email": "a@example.pl"})
    admin_client.post(f"/privacy/requests/{request_id}/rectification")
    admin_client.post(f"/clients/{other_id}/groups/email/edit", data={"email": "b@example.de"})
    assert "request_id" not in _updates(app, client_id)[0].details
    assert "request_id" not in _updates(app, other_id)[0].details
    assert "No change has been made under this request yet." in admin_client.get(
        f"/privacy/requests/{request_id}"
    ).get_data(as_text=True)


def test_closing_the_request_ends_the_mode(admin_client, app):
    client_id, request_id = _setup(app)
    admin_client.post(f"/privacy/requests/{request_id}/rectification")
    with app.app_context():
        db.session.get(DataRequest, request_id).identity_check = "Called back on the number on file"
        db.session.commit()
    admin_client.post(
        f"/privacy/requests/{request_id}/close", data={"status": "done", "outcome": "Corrected"}
    )
    admin_client.post(f"/clients/{client_id}/groups/email/edit", data={"email": "c@example.pl"})
    assert "request_id" not in _updates(app, client_id)[0].details


def test_a_mode_left_over_in_another_session_stops_when_the_request_closes(client, app):
    """Closing ends the mode of whoever closed it; another user's leftover mode is
    dropped at their next edit rather than linking a change to a closed request."""
    with app.app_context():
        make_user("kierownik@example.com", role="manager", name="Kierownik")
    client_id, request_id = _setup(app)
    login(client, "kierownik@example.com")
    client.post(f"/privacy/requests/{request_id}/rectification")
    with app.app_context():
        data_request = db.session.get(DataRequest, request_id)
        data_request.status = "done"
        db.session.commit()
    client.post(f"/clients/{client_id}/groups/email/edit", data={"email": "d@example.pl"})
    assert "request_id" not in _updates(app, client_id)[0].details
    assert "recorded under data request" not in client.get(f"/clients/{client_id}").get_data(
        as_text=True
    )


def test_only_an_open_rectification_request_with_a_client_starts_the_mode(admin_client, app):
    _client_id, access_id = _setup(app, kind="access")
    with app.app_context():
        unmatched_id = make_request("rectification", requester="Nieznany").id
    for request_id, message in (
        (access_id, "Only a rectification request"),
        (unmatched_id, "Link the request to the client first."),
    ):
        response = admin_client.post(
            f"/privacy/requests/{request_id}/rectification", follow_redirects=True
        )
        assert message in response.get_data(as_text=True)
    page = admin_client.get(f"/privacy/requests/{access_id}").get_data(as_text=True)
    assert "Edit the card under this request" not in page


def test_staff_who_cannot_edit_clients_cannot_start_it(client, app):
    with app.app_context():
        make_user("czytelnik@example.com", role="readonly", name="Czytelnik")
    _client_id, request_id = _setup(app)
    login(client, "czytelnik@example.com")
    assert client.post(f"/privacy/requests/{request_id}/rectification").status_code == 403
