"""Mass actions on the client list: tags, owner, export of a selection; the confirmation;
scope (forged ids and "all matching" never reach other clients); permissions; audit."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.auth.models import Team, User
from crm.clients.models import Client, Tag
from crm.extensions import db
from tests.conftest import login, make_client, make_field, make_user

HX = {"HX-Request": "true"}


def tags_of(client_id: int) -> list[str]:
    client = db.session.get(Client, client_id)
    assert client is not None
    return sorted(t.name for t in client.tags)


def audits(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


@pytest.fixture
def rows(app):  # type: ignore[no-untyped-def]
    """Four clients in Łódź and Brno; one tagged VIP already."""
    with app.app_context():
        make_field("Contract", "checkbox")
        vip = Tag(name="VIP")
        db.session.add(vip)
        db.session.commit()
        ids = {
            "a": make_client(last_name="Adamska", city="Łódź", custom={"contract": 0}).id,
            "b": make_client(last_name="Bednarz", city="Łódź", custom={}).id,
            "c": make_client(last_name="Cieślak", city="Łódź", custom={"contract": 1}).id,
            "d": make_client(last_name="Dvořák", city="Brno", custom={}).id,
        }
        client = db.session.get(Client, ids["b"])
        client.tags = [db.session.get(Tag, vip.id)]
        db.session.commit()
        return ids


def test_the_confirmation_says_how_many_and_asks_for_the_tag(admin_client, rows):
    response = admin_client.get(
        "/search/mass",
        query_string={"action": "tag_add", "all": "1", "q": 'city = "Łódź"'},
        headers=HX,
    )
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "All 3 clients that match the search." in body
    assert "Add the tag to 3 clients" in body and 'name="tag"' in body
    assert '<option value="VIP">' in body  # existing tags are suggested
    ticked = admin_client.get(
        "/search/mass", query_string={"action": "owner", "ids": [rows["a"], rows["d"]]}
    )
    assert "2 clients selected." in ticked.get_data(as_text=True)
    nothing = admin_client.get("/search/mass", query_string={"action": "tag_add"}, headers=HX)
    assert "Tick clients in the list first" in nothing.get_data(as_text=True)


def test_add_a_tag_to_every_client_matching_the_query(admin_client, app, rows):
    response = admin_client.post(
        "/search/mass",
        data={"action": "tag_add", "all": "1", "q": 'city = "Łódź"', "tag": "  vip "},
        headers=HX,
    )
    assert response.status_code == 204
    assert response.headers["HX-Redirect"].startswith("/clients/?q=")
    with app.app_context():
        # The existing tag (any case) is reused; the one who had it is not counted.
        assert db.session.scalars(select(Tag.name)).all() == ["VIP"]
        assert [tags_of(rows[k]) for k in "abcd"] == [["VIP"], ["VIP"], ["VIP"], []]
        (entry,) = audits("clients.mass_tag_add")
        assert entry.details == {
            "count": 2,
            "selected": 3,
            "query": 'city = "Łódź"',
            "tag": "VIP",
        }
    page = admin_client.get("/clients/").get_data(as_text=True)
    assert "Tag “VIP” added to 2 clients." in page


def test_add_a_new_tag_to_ticked_rows(admin_client, app, rows):
    admin_client.post(
        "/search/mass", data={"action": "tag_add", "ids": [rows["a"], rows["d"]], "tag": "Nowy"}
    )
    with app.app_context():
        assert tags_of(rows["a"]) == ["Nowy"] and tags_of(rows["d"]) == ["Nowy"]
        assert tags_of(rows["c"]) == []
        (entry,) = audits("clients.mass_tag_add")
        assert entry.details["ids"] == [rows["a"], rows["d"]] and entry.details["count"] == 2


def test_remove_a_tag_even_when_the_query_names_it(admin_client, app, rows):
    with app.app_context():
        vip = db.session.scalar(select(Tag).where(Tag.name == "VIP"))
        db.session.get(Client, rows["d"]).tags = [vip]
        db.session.commit()
        vip_id = vip.id
    response = admin_client.post(
        "/search/mass",
        data={"action": "tag_remove", "all": "1", "q": 'tags = "VIP"', "tag": str(vip_id)},
        headers=HX,
    )
    assert response.status_code == 204
    with app.app_context():
        assert [tags_of(rows[k]) for k in "abcd"] == [[], [], [], []]
        (entry,) = audits("clients.mass_tag_remove")
        assert entry.details["count"] == 2 and entry.details["tag"] == "VIP"


def test_add_a_tag_to_a_query_on_that_tag(admin_client, app, rows):
    """The INSERT reads the table it writes to (through the query): still set-based and
    correct on both databases."""
    admin_client.post(
        "/search/mass",
        data={"action": "tag_add", "all": "1", "q": 'tags IS EMPTY OR tags = "VIP"', "tag": "VIP"},
    )
    with app.app_context():
        assert all(tags_of(rows[k]) == ["VIP"] for k in "abcd")
        assert audits("clients.mass_tag_add")[0].details["count"] == 3


def test_assign_an_owner_moves_the_updated_time(admin_client, app, rows):
    with app.app_context():
        ewa = make_user("ewa@example.com", role="sales", name="Ewa Nowak")
        ewa_id = ewa.id
        old = datetime.now(UTC) - timedelta(days=30)
        for client in db.session.scalars(select(Client)):
            client.updated_at = old
        db.session.get(Client, rows["c"]).owner_id = ewa_id
        db.session.commit()
    form = admin_client.get(
        "/search/mass", query_string={"action": "owner", "all": "1", "q": 'city = "Łódź"'}
    ).get_data(as_text=True)
    assert "Ewa Nowak" in form and "Nobody" in form
    admin_client.post(
        "/search/mass",
        data={"action": "owner", "all": "1", "q": 'city = "Łódź"', "owner": str(ewa_id)},
    )
    with app.app_context():
        clients = {c.id: c for c in db.session.scalars(select(Client))}
        assert [clients[rows[k]].owner_id for k in "abcd"] == [ewa_id, ewa_id, ewa_id, None]
        assert clients[rows["a"]].updated_at > old + timedelta(days=1)
        assert clients[rows["c"]].updated_at < old + timedelta(days=1)  # had her already
        assert clients[rows["d"]].updated_at < old + timedelta(days=1)
        (entry,) = audits("clients.mass_owner")
        assert entry.details["count"] == 2 and entry.details["owner"] == "ewa@example.com"
    # And back to nobody.
    admin_client.post("/search/mass", data={"action": "owner", "ids": [rows["a"]], "owner": ""})
    with app.app_context():
        assert db.session.get(Client, rows["a"]).owner_id is None


def test_bad_inputs_stay_in_the_confirmation(admin_client, app, rows):
    for data, message in [
        ({"action": "tag_add", "tag": "   "}, "This field is required."),
        ({"action": "tag_add", "tag": "x" * 65}, "longer than 64"),
        ({"action": "tag_remove", "tag": "999"}, "Pick a tag from the list."),
        ({"action": "owner", "owner": "999"}, "Pick a user from the list."),
    ]:
        response = admin_client.post("/search/mass", data={"ids": [rows["a"]], **data}, headers=HX)
        assert response.status_code == 422, data
        assert message in response.get_data(as_text=True), data
    bad_query = admin_client.get(
        "/search/mass", query_string={"action": "tag_add", "all": "1", "q": 'city = "x'}
    )
    assert "The quoted text is not closed" in bad_query.get_data(as_text=True)
    with app.app_context():
        assert audits("clients.mass_tag_add") == [] and tags_of(rows["a"]) == []


@pytest.fixture
def two_teams(app):  # type: ignore[no-untyped-def]
    """Anna (sales, north) with one client; Piotr (sales, south) with one; one without owner."""
    with app.app_context():
        north, south = Team(name="Północ"), Team(name="Południe")
        db.session.add_all([north, south])
        db.session.flush()
        anna = make_user("anna@example.com", role="sales", name="Anna")
        piotr = make_user("piotr@example.com", role="sales", name="Piotr")
        anna.team_id, piotr.team_id = north.id, south.id
        db.session.commit()
        return {
            "mine": make_client(last_name="Mój", city="Łódź", owner_id=anna.id).id,
            "theirs": make_client(last_name="Cudzy", city="Łódź", owner_id=piotr.id).id,
            "nobody": make_client(last_name="Niczyj", city="Łódź", owner_id=None).id,
            "anna": anna.id,
        }


def test_forged_ids_and_all_matching_stay_within_the_scope(client, app, two_teams):
    login(client, "anna@example.com")
    everyone = [two_teams["mine"], two_teams["theirs"], two_teams["nobody"]]
    confirm = client.get("/search/mass", query_string={"action": "tag_add", "ids": everyone})
    assert "1 client selected." in confirm.get_data(as_text=True)
    client.post("/search/mass", data={"action": "tag_add", "ids": everyone, "tag": "Forged"})
    client.post(
        "/search/mass",
        data={"action": "tag_add", "all": "1", "q": 'NOT city = "x"', "tag": "All"},
    )
    client.post(
        "/search/mass", data={"action": "owner", "ids": everyone, "owner": str(two_teams["anna"])}
    )
    with app.app_context():
        assert tags_of(two_teams["mine"]) == ["All", "Forged"]
        assert tags_of(two_teams["theirs"]) == [] and tags_of(two_teams["nobody"]) == []
        owners = {c.id: c.owner_id for c in db.session.scalars(select(Client))}
        assert owners[two_teams["nobody"]] is None
        assert owners[two_teams["theirs"]] != two_teams["anna"]
        counts = [e.details["count"] for e in audits("clients.mass_tag_add")]
        assert counts == [1, 1]


def test_readonly_gets_403_and_no_checkboxes(client, app, rows):
    with app.app_context():
        make_user("ro@example.com", role="readonly", name="Reader")
    login(client, "ro@example.com")
    for action in ("tag_add", "tag_remove", "owner", "export_csv", "export_xlsx"):
        query = {"action": action, "ids": [rows["a"]]}
        assert client.get("/search/mass", query_string=query).status_code == 403, action
        data = {**query, "tag": "X"}
        assert client.post("/search/mass", data=data).status_code == 403, action
    page = client.get("/clients/").get_data(as_text=True)
    assert 'name="ids"' not in page and "mass-bar" not in page
    with app.app_context():
        assert tags_of(rows["a"]) == []


def test_sales_may_tag_but_not_export(client, app, two_teams):
    login(client, "anna@example.com")
    page = client.get("/clients/").get_data(as_text=True)
    assert 'name="ids"' in page and 'value="tag_add"' in page and "export_csv" not in page
    query = {"action": "export_csv", "ids": [two_teams["mine"]]}
    assert client.get("/search/mass", query_string=query).status_code == 403


def test_export_a_selection_by_ids(admin_client, app, rows):
    confirm = admin_client.get(
        "/search/mass", query_string={"action": "export_csv", "ids": [rows["a"], rows["d"]]}
    ).get_data(as_text=True)
    assert f"/clients/export?format=csv&amp;ids={rows['a']},{rows['d']}" in confirm
    assert "Download 2 clients as CSV" in confirm
    response = admin_client.get(
        "/clients/export", query_string={"format": "csv", "ids": f"{rows['a']},{rows['d']},x"}
    )
    assert response.status_code == 200
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True)[1:])))
    assert sorted(row[1] for row in table[1:]) == ["Adamska", "Dvořák"]
    with app.app_context():
        (entry,) = audits("clients.export")
        assert entry.details["ids"] == [rows["a"], rows["d"]] and entry.details["rows"] == 2
    # A POST of a download action is refused: it has nothing to change.
    post = admin_client.post("/search/mass", data={"action": "export_csv", "ids": [rows["a"]]})
    assert post.status_code == 400


def test_export_by_ids_never_leaves_the_scope(client, app, two_teams):
    # The sales role (team scope) with the export permission added.
    with app.app_context():
        anna = db.session.get(User, two_teams["anna"])
        anna.role.permissions = [*anna.role.permissions, "clients:export"]
        db.session.commit()
    login(client, "anna@example.com")
    ids = f"{two_teams['mine']},{two_teams['theirs']},{two_teams['nobody']}"
    response = client.get("/clients/export", query_string={"format": "csv", "ids": ids})
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True)[1:])))
    assert [row[1] for row in table[1:]] == ["Mój"]


def test_the_list_offers_selection_export_and_save(admin_client, rows):
    body = admin_client.get("/clients/", query_string={"q": 'city = "Łódź"'}).get_data(as_text=True)
    assert body.count('name="ids"') == 3
    assert "All 3 matching clients" in body
    assert 'value="tag_add"' in body and 'value="export_xlsx"' in body
    assert "/clients/export?format=xlsx&amp;q=city" in body  # the Export menu
    assert "Save search…" in body
