"""Teams: create, rename, delete (members stay, without a team); audited."""

from __future__ import annotations

from sqlalchemy import select

from crm.auth.models import Team, User
from crm.extensions import db
from tests.conftest import make_user
from tests.users.helpers import audit_entries


def test_team_lifecycle(admin_client, app):
    empty = admin_client.get("/admin/teams/").get_data(as_text=True)
    assert "No teams yet" in empty
    assert (
        admin_client.post("/admin/teams/", data={"name": "  Praha   centrum "}).status_code == 302
    )
    with app.app_context():
        team = db.session.scalar(select(Team))
        assert team.name == "Praha centrum"
        team_id = team.id
        member = make_user("petr@example.com", role="sales", name="Petr")
        member.team_id = team_id
        db.session.commit()
        member_id = member.id
    duplicate = admin_client.post("/admin/teams/", data={"name": "PRAHA CENTRUM"})
    assert duplicate.status_code == 422 and "exists already" in duplicate.get_data(True)
    assert 'value="PRAHA CENTRUM"' in duplicate.get_data(as_text=True)
    assert admin_client.post("/admin/teams/", data={"name": ""}).status_code == 422

    renamed = admin_client.post(f"/admin/teams/{team_id}", data={"name": "Praha – Žižkov"})
    assert renamed.status_code == 302
    listing = admin_client.get("/admin/teams/").get_data(as_text=True)
    assert "Praha – Žižkov" in listing

    confirm = admin_client.get(f"/admin/teams/{team_id}/delete")
    assert confirm.status_code == 200 and "1 member(s)" in confirm.get_data(as_text=True)
    assert admin_client.post(f"/admin/teams/{team_id}/delete").status_code == 302
    with app.app_context():
        assert db.session.get(Team, team_id) is None
        user = db.session.get(User, member_id)
        assert user is not None and user.team_id is None
    assert [e.action for e in audit_entries(app, "team_created")] == ["team_created"]
    assert audit_entries(app, "team_renamed")[0].details == {
        "name": ["Praha centrum", "Praha – Žižkov"]
    }
    assert audit_entries(app, "team_deleted")[0].details == {"name": "Praha – Žižkov"}
    assert admin_client.get(f"/admin/teams/{team_id}").status_code == 404


def test_team_names_are_escaped(admin_client, app):
    admin_client.post("/admin/teams/", data={"name": "<b>Bold</b> & Co"})
    html = admin_client.get("/admin/teams/").get_data(as_text=True)
    assert "<b>Bold</b>" not in html and "&lt;b&gt;Bold&lt;/b&gt; &amp; Co" in html
