"""The stage settings under /deals/stages."""

from __future__ import annotations

from sqlalchemy import select

from crm.deals.models import DealStage
from crm.extensions import db
from tests.conftest import login, make_client, make_user
from tests.deals.factories import make_deal, stage

HX = {"HX-Request": "true"}


def _names(app) -> list[str]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(
            db.session.scalars(select(DealStage.name).order_by(DealStage.position, DealStage.id))
        )


def test_stage_settings_need_the_settings_permission(client, app):
    with app.app_context():
        make_user("sales@example.com", role="sales", name="Sam")
        lead_id = stage("Lead").id
    login(client, "sales@example.com")
    assert client.get("/deals/stages").status_code == 403
    assert client.post("/deals/stages", data={"name": "X", "kind": "open"}).status_code == 403
    assert client.post(f"/deals/stages/{lead_id}/delete").status_code == 403
    assert (
        client.post(f"/deals/stages/{lead_id}", data={"name": "Y", "kind": "open"}).status_code
        == 403
    )
    assert "Lead" in _names(app)


def test_the_page_lists_seeded_stages_in_order_with_usage(admin_client, app):
    with app.app_context():
        make_deal("One", make_client().id, "Proposal")
    body = admin_client.get("/deals/stages").get_data(as_text=True)
    positions = [
        body.index(f'value="{n}"')
        for n in ("Lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost")
    ]
    assert positions == sorted(positions)
    assert _names(app) == ["Lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost"]


def test_add_a_stage_and_refuse_a_duplicate_name(admin_client, app):
    response = admin_client.post(
        "/deals/stages", data={"name": " Demo  booked ", "kind": "open"}, headers=HX
    )
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="stages">')
    assert "Stage “Demo booked” added." in html
    assert _names(app)[-1] == "Demo booked"

    duplicate = admin_client.post(
        "/deals/stages", data={"name": "demo BOOKED", "kind": "won"}, headers=HX
    )
    html = duplicate.get_data(as_text=True)
    assert "A stage named “Demo booked” exists already." in html
    assert 'value="demo BOOKED"' in html  # kept for correction
    assert _names(app).count("Demo booked") == 1 and len(_names(app)) == 7

    empty = admin_client.post("/deals/stages", data={"name": "  ", "kind": "open"})
    assert "Give the stage a name." in empty.get_data(as_text=True)
    assert len(_names(app)) == 7


def test_rename_and_change_kind(admin_client, app):
    with app.app_context():
        won_id = stage("Won").id
    response = admin_client.post(
        f"/deals/stages/{won_id}", data={"name": "Signed", "kind": "won"}, headers=HX
    )
    assert "Stage “Signed” saved." in response.get_data(as_text=True)
    with app.app_context():
        signed = db.session.get(DealStage, won_id)
        assert (signed.name, signed.kind) == ("Signed", "won")
    clash = admin_client.post(
        f"/deals/stages/{won_id}", data={"name": "Lost", "kind": "won"}, headers=HX
    )
    html = clash.get_data(as_text=True)
    assert "A stage named “Lost” exists already." in html
    with app.app_context():
        assert db.session.get(DealStage, won_id).name == "Signed"
    # Without htmx: a redirect and a flash message.
    plain = admin_client.post(f"/deals/stages/{won_id}", data={"name": "Won", "kind": "won"})
    assert plain.status_code == 302


def test_reorder_up_and_down(admin_client, app):
    with app.app_context():
        proposal_id = stage("Proposal").id
    admin_client.post(f"/deals/stages/{proposal_id}/move", data={"direction": "up"}, headers=HX)
    assert _names(app)[:3] == ["Lead", "Proposal", "Qualified"]
    admin_client.post(f"/deals/stages/{proposal_id}/move", data={"direction": "up"}, headers=HX)
    admin_client.post(f"/deals/stages/{proposal_id}/move", data={"direction": "up"}, headers=HX)
    assert _names(app)[:3] == ["Proposal", "Lead", "Qualified"]  # the top stays the top
    admin_client.post(f"/deals/stages/{proposal_id}/move", data={"direction": "down"})
    assert _names(app)[:3] == ["Lead", "Proposal", "Qualified"]
    board = admin_client.get("/deals/").get_data(as_text=True)
    tabs = board.split('class="tabs"', 1)[1].split("</nav>", 1)[0]
    assert tabs.index(">Lead <") < tabs.index(">Proposal <") < tabs.index(">Qualified <")


def test_a_stage_in_use_cannot_be_deleted(admin_client, app):
    with app.app_context():
        deal_id = make_deal("Keeps the stage", make_client().id, "Qualified").id
        qualified_id = stage("Qualified").id
    response = admin_client.post(f"/deals/stages/{qualified_id}/delete", headers=HX)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "“Qualified” still holds 1 deal(s). Move them to another stage first" in html
    assert "Qualified" in _names(app)
    # Once the deal has moved on, the stage can go.
    with app.app_context():
        lead_id = stage("Lead").id
    admin_client.post(f"/deals/{deal_id}/stage", data={"stage_id": lead_id})
    deleted = admin_client.post(f"/deals/stages/{qualified_id}/delete", headers=HX)
    assert "Stage “Qualified” deleted." in deleted.get_data(as_text=True)
    assert "Qualified" not in _names(app)


def test_the_last_open_stage_stays(admin_client, app):
    with app.app_context():
        ids = [stage(n).id for n in ("Lead", "Qualified", "Proposal", "Negotiation")]
    for stage_id in ids[1:]:
        admin_client.post(f"/deals/stages/{stage_id}/delete", headers=HX)
    last = admin_client.post(f"/deals/stages/{ids[0]}/delete", headers=HX)
    assert "The pipeline needs at least one open stage." in last.get_data(as_text=True)
    to_won = admin_client.post(
        f"/deals/stages/{ids[0]}", data={"name": "Lead", "kind": "won"}, headers=HX
    )
    assert "The pipeline needs at least one open stage." in to_won.get_data(as_text=True)
    assert _names(app) == ["Lead", "Won", "Lost"]
    with app.app_context():
        assert stage("Lead").kind == "open"
