"""A Sales user reaches own and team clients only, by every road: the list, the quick
search, a filter, the card and its parts, an attachment and an export. Outside the
scope, records answer 404 (never 403, so ids cannot be probed)."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from crm.attachments.models import Attachment
from crm.auth.models import Role, Team
from crm.auth.permissions import Permission
from crm.extensions import db
from tests.conftest import login, make_client, make_user


@pytest.fixture
def teams(app):  # type: ignore[no-untyped-def]
    """Anna and Bartek sell in the Kraków team, Celina in the Łódź team."""
    with app.app_context():
        krakow, lodz = Team(name="Kraków"), Team(name="Łódź")
        db.session.add_all([krakow, lodz])
        db.session.commit()
        anna = make_user("anna@example.com", role="sales", name="Anna Nowak")
        bartek = make_user("bartek@example.com", role="sales", name="Bartek Wójcik")
        celina = make_user("celina@example.com", role="sales", name="Celina Dvořák")
        anna.team_id = bartek.team_id = krakow.id
        celina.team_id = lodz.id
        db.session.commit()
        ids = {
            "own": make_client(last_name="Annowska", city="Łódź", owner_id=anna.id).id,
            "team": make_client(last_name="Bartkowski", city="Kraków", owner_id=bartek.id).id,
            "other": make_client(last_name="Celińska", city="Łódź", owner_id=celina.id).id,
            "nobody": make_client(last_name="Niczyja", city="Łódź").id,
        }
    return ids


def _as(client, email: str):  # type: ignore[no-untyped-def]
    login(client, email)
    return client


def _listed(body: str, client_id: int) -> bool:
    """Whether a list page links to the client's card (the search box echoes the query,
    so names alone would prove nothing)."""
    return f'href="/clients/{client_id}"' in body


def test_the_list_shows_own_and_team_clients_only(client, teams):
    body = _as(client, "anna@example.com").get("/clients/").get_data(as_text=True)
    assert _listed(body, teams["own"]) and _listed(body, teams["team"])
    assert not _listed(body, teams["other"]) and not _listed(body, teams["nobody"])


def test_quick_search_does_not_find_other_teams_clients(client, teams):
    http = _as(client, "anna@example.com")
    assert not _listed(http.get("/clients/?q=Celińska").get_data(as_text=True), teams["other"])
    assert not _listed(http.get("/clients/?q=niczyja").get_data(as_text=True), teams["nobody"])
    assert _listed(http.get("/clients/?q=annowska").get_data(as_text=True), teams["own"])


def test_a_filter_does_not_reach_other_teams_clients(client, teams):
    body = _as(client, "anna@example.com").get('/clients/?q=city = "Łódź"').get_data(as_text=True)
    assert _listed(body, teams["own"]) and not _listed(body, teams["team"])
    assert not _listed(body, teams["other"]) and not _listed(body, teams["nobody"])


def test_card_urls_outside_the_scope_answer_404(client, teams):
    http = _as(client, "anna@example.com")
    assert http.get(f"/clients/{teams['team']}").status_code == 200
    for key in ("other", "nobody"):
        cid = teams[key]
        assert http.get(f"/clients/{cid}").status_code == 404
        assert http.get(f"/clients/{cid}/edit").status_code == 404
        assert http.get(f"/clients/{cid}/groups/email/edit").status_code == 404
        assert (
            http.post(
                f"/clients/{cid}/groups/email/edit", data={"email": "x@example.com"}
            ).status_code
            == 404
        )


def test_attachment_urls_outside_the_scope_answer_404(client, app, teams):
    http = _as(client, "celina@example.com")
    response = http.post(
        f"/clients/{teams['other']}/attachments",
        data={"file": (io.BytesIO(b"umowa"), "umowa.txt")},
        content_type="multipart/form-data",
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    with app.app_context():
        attachment_id = db.session.scalar(select(Attachment.id))
    download = http.get(f"/attachments/{attachment_id}")
    assert download.status_code == 200
    download.close()
    http.post("/logout")
    http = _as(client, "anna@example.com")
    assert http.get(f"/attachments/{attachment_id}").status_code == 404
    assert http.post(f"/attachments/{attachment_id}/delete").status_code == 404


def test_an_export_holds_only_clients_in_scope(client, app, teams):
    http = _as(client, "anna@example.com")
    # Sales may not export at all, as shipped.
    assert http.get("/clients/export?format=csv").status_code == 403
    with app.app_context():
        role = db.session.scalar(select(Role).where(Role.name == "sales"))
        role.permissions = [*role.permissions, Permission.CLIENTS_EXPORT.value]
        db.session.commit()
    response = http.get("/clients/export?format=csv")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "Annowska" in text and "Bartkowski" in text
    assert "Celińska" not in text and "Niczyja" not in text
    # A filter narrows the export further, never widens it.
    text = http.get('/clients/export?format=csv&q=city = "Łódź"').get_data(as_text=True)
    assert "Annowska" in text and "Celińska" not in text and "Bartkowski" not in text
