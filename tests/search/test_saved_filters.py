"""Saved filters: saving the list's search, who sees and who changes them, live counts
within the scope, and what renaming or archiving a custom field does to them."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from crm.audit.models import AuditEntry
from crm.auth.models import Team, User
from crm.clients import listing
from crm.extensions import db
from crm.fields.models import CustomField, FieldType
from crm.fields.services import FieldSpec, archive_field, update_field
from crm.search.models import SavedFilter
from tests.conftest import login, make_client, make_field, make_user

HX = {"HX-Request": "true"}
QUERY = '"Contract" < 1 AND city = "Łódź"'


@pytest.fixture
def rows(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        make_field("Contract", "checkbox")
        make_client(last_name="Bezumowy", city="Łódź", custom={"contract": 0})
        make_client(last_name="Nieznany", city="Łódź", custom={})
        make_client(last_name="Zumową", city="Łódź", custom={"contract": 1})
        make_client(last_name="Brneński", city="Brno", custom={})


def save(http, name: str, q: str = QUERY, **extra: str):  # type: ignore[no-untyped-def]
    data = {"name": name, "q": q, "sort": "city", "dir": "desc", "columns": "email,city"}
    data.update(extra)
    return http.post("/search/filters", data=data, headers=HX)


def saved_named(name: str) -> SavedFilter:
    found = db.session.scalar(select(SavedFilter).where(SavedFilter.name == name))
    assert found is not None
    return found


def sidebar(http) -> str:  # type: ignore[no-untyped-def]
    response = http.get("/search/filters", headers=HX)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def apply_link(body: str, name: str) -> str:
    match = re.search(r'<a href="([^"]+)" class="filter-name"[^>]*>\s*' + re.escape(name), body)
    assert match, f"no link for {name}"
    return unescape(match.group(1))


def audits(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_saving_the_search_keeps_tree_text_sort_and_columns(admin_client, app, rows):
    response = save(admin_client, "  Bez  umowy ", shared="y")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Search saved as “Bez umowy”." in body
    assert 'id="saved-filters" class="saved-filters" hx-swap-oob="true"' in body
    with app.app_context():
        saved = saved_named("Bez umowy")
        assert saved.shared and saved.owner.email == "admin@example.com"
        # By reference: cf:contract, not the label.
        assert saved.tree == {
            "and": [
                {"field": "cf:contract", "op": "<", "value": 1},
                {"field": "city", "op": "=", "value": "Łódź"},
            ]
        }
        assert saved.query_text == 'Contract < 1 AND city = "Łódź"'
        assert (saved.sort, saved.sort_desc, saved.columns) == ("city", True, ["email", "city"])
        (entry,) = audits("saved_filter.create")
        assert entry.target_id == saved.id and entry.details["name"] == "Bez umowy"
    # Applying it: the list's address with the query, the sort and the columns.
    link = apply_link(sidebar(admin_client), "Bez umowy")
    args = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert args == {
        "q": 'Contract < 1 AND city = "Łódź"',
        "sort": "city",
        "dir": "desc",
        "columns": "email,city",
    }
    page = admin_client.get(link).get_data(as_text=True)
    assert "2 clients" in page and "Bezumowy</strong>" in page and "Nieznany</strong>" in page
    headers = [
        re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", page, re.S)
    ]
    assert headers == ["Name", "Email", "City"]


def test_the_columns_default_to_what_the_user_shows(admin_client, app, rows):
    admin_client.post("/clients/columns", data={"columns": ["company", "tags"]})
    save(admin_client, "Mine", columns="")
    with app.app_context():
        assert saved_named("Mine").columns == ["company", "tags"]


def test_bad_names_and_bad_queries_are_refused_next_to_the_field(admin_client, app, rows):
    save(admin_client, "Bez umowy")
    for name, message in [("", "This field is required."), ("BEZ UMOWY", "already")]:
        response = save(admin_client, name)
        assert response.status_code == 422
        body = response.get_data(as_text=True)
        assert message in body and 'id="save-name-error"' in body
        assert f'value="{name}"' in body  # what was typed stays
    response = save(admin_client, "Broken", q='city = "Łódź')
    assert response.status_code == 422
    assert "Fix the search before saving it" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(SavedFilter).where(SavedFilter.name == "Broken")) is None
        assert len(audits("saved_filter.create")) == 1


def test_private_filters_are_their_owners_alone(client, app, rows):
    with app.app_context():
        make_user()
        make_user("ewa@example.com", role="manager", name="Ewa")
    login(client, "admin@example.com")
    save(client, "Private one")
    save(client, "Shared one", shared="y")
    with app.app_context():
        private_id = saved_named("Private one").id
        shared_id = saved_named("Shared one").id
    client.post("/logout")
    login(client, "ewa@example.com")
    body = sidebar(client)
    assert "Private one" not in body
    assert "Shared one" in body and "shared by Ada Admin" in body
    assert "Change “Shared one”" not in body  # no menu: not hers to change
    for path in (f"{private_id}/count", f"{private_id}/rename", f"{private_id}/delete"):
        assert client.get(f"/search/filters/{path}").status_code == 404
    assert client.get(f"/search/filters/{shared_id}/count").status_code == 200
    # Someone else's shared filter: seen, not changed (a manager has no settings:manage).
    assert client.get(f"/search/filters/{shared_id}/rename").status_code == 403
    assert client.post(f"/search/filters/{shared_id}/rename", data={"name": "X"}).status_code == 403
    assert (
        client.post(f"/search/filters/{shared_id}/share", data={"shared": "0"}).status_code == 403
    )
    assert client.post(f"/search/filters/{shared_id}/delete").status_code == 403
    assert client.post(f"/search/filters/{private_id}/delete").status_code == 404
    with app.app_context():
        assert saved_named("Shared one").shared
        assert len(db.session.scalars(select(SavedFilter)).all()) == 2


def test_owner_renames_shares_and_deletes_with_confirmation(admin_client, app, rows):
    save(admin_client, "Bez umowy")
    with app.app_context():
        filter_id = saved_named("Bez umowy").id
    form = admin_client.get(f"/search/filters/{filter_id}/rename", headers=HX)
    assert 'id="rename-' in form.get_data(as_text=True)
    renamed = admin_client.post(
        f"/search/filters/{filter_id}/rename", data={"name": "Do podpisu"}, headers=HX
    )
    assert "Filter renamed to “Do podpisu”." in renamed.get_data(as_text=True)
    shared = admin_client.post(
        f"/search/filters/{filter_id}/share", data={"shared": "1"}, headers=HX
    )
    assert "is shared with everyone" in shared.get_data(as_text=True)
    # Delete asks first; only the POST deletes.
    confirm = admin_client.get(f"/search/filters/{filter_id}/delete", headers=HX)
    assert "Delete the filter “Do podpisu”?" in confirm.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(SavedFilter, filter_id) is not None
    gone = admin_client.post(f"/search/filters/{filter_id}/delete", headers=HX)
    assert "Filter “Do podpisu” deleted." in gone.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(SavedFilter, filter_id) is None
        updates = audits("saved_filter.update")
        assert [e.details["changes"] for e in updates] == [
            {"name": ["Bez umowy", "Do podpisu"]},
            {"shared": [False, True]},
        ]
        (deleted,) = audits("saved_filter.delete")
        assert deleted.target_id == filter_id and deleted.details["name"] == "Do podpisu"


def test_a_rename_that_clashes_keeps_the_form_with_the_error(admin_client, app, rows):
    save(admin_client, "One")
    save(admin_client, "Two")
    with app.app_context():
        two = saved_named("Two").id
    response = admin_client.post(f"/search/filters/{two}/rename", data={"name": "one"}, headers=HX)
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "You have a filter named “One” already." in body and 'value="one"' in body


def test_an_admin_with_settings_manage_changes_what_others_share(client, app, rows):
    with app.app_context():
        make_user()
        make_user("ewa@example.com", role="manager", name="Ewa")
    login(client, "ewa@example.com")
    save(client, "Ewa shares", shared="y")
    save(client, "Ewa keeps")
    with app.app_context():
        shared_id = saved_named("Ewa shares").id
        private_id = saved_named("Ewa keeps").id
    client.post("/logout")
    login(client, "admin@example.com")
    body = sidebar(client)
    assert "Change “Ewa shares”" in body and "Ewa keeps" not in body
    response = client.post(f"/search/filters/{shared_id}/share", data={"shared": "0"}, headers=HX)
    assert response.status_code == 200
    assert client.get(f"/search/filters/{private_id}/rename").status_code == 404
    with app.app_context():
        assert not saved_named("Ewa shares").shared


def test_live_counts_respect_the_scope_and_the_cap(client, app, rows, monkeypatch):
    with app.app_context():
        north = Team(name="Północ")
        db.session.add(north)
        db.session.flush()
        make_user()
        anna = make_user("anna@example.com", role="sales", name="Anna")
        anna.team_id = north.id
        db.session.commit()
        make_client(last_name="Annowy", city="Łódź", owner_id=anna.id, custom={})
    login(client, "admin@example.com")
    save(client, "Bez umowy", shared="y")
    with app.app_context():
        filter_id = saved_named("Bez umowy").id
    count = client.get(f"/search/filters/{filter_id}/count", headers=HX).get_data(as_text=True)
    assert ">3<" in count and 'title="3 clients"' in count
    monkeypatch.setattr(listing, "COUNT_CAP", 2)
    capped = client.get(f"/search/filters/{filter_id}/count").get_data(as_text=True)
    assert ">2+<" in capped
    monkeypatch.undo()
    client.post("/logout")
    login(client, "anna@example.com")
    count = client.get(f"/search/filters/{filter_id}/count").get_data(as_text=True)
    assert ">1<" in count  # only her own client


def test_renaming_a_field_keeps_the_filter_working(admin_client, app, rows):
    save(admin_client, "Bez umowy")
    with app.app_context():
        field = db.session.scalar(select(CustomField).where(CustomField.key == "contract"))
        update_field(
            field,
            FieldSpec(label="Umowa podpisana", field_type=FieldType.CHECKBOX, choices=[]),
            "PL",
        )
        db.session.commit()
        filter_id = saved_named("Bez umowy").id
    body = sidebar(admin_client)
    link = apply_link(body, "Bez umowy")
    assert parse_qs(urlsplit(link).query)["q"] == ['"Umowa podpisana" < 1 AND city = "Łódź"']
    assert "archived" not in body
    page = admin_client.get(link).get_data(as_text=True)
    assert "2 clients" in page and "Bezumowy</strong>" in page
    count = admin_client.get(f"/search/filters/{filter_id}/count").get_data(as_text=True)
    assert ">2<" in count


def test_archiving_a_field_flags_the_filter_and_applying_it_says_so(admin_client, app, rows):
    save(admin_client, "Bez umowy")
    save(admin_client, "Only Brno", q='city = "Brno"')
    with app.app_context():
        field = db.session.scalar(select(CustomField).where(CustomField.key == "contract"))
        archive_field(field)
        db.session.commit()
        filter_id = saved_named("Bez umowy").id
    body = sidebar(admin_client)
    flagged = body[body.index('id="filter-' + str(filter_id)) :]
    flagged = flagged[: flagged.index("</li>")]
    assert "uses an archived field: Contract" in flagged
    assert "hx-get" not in flagged.split("filter-meta")[0]  # no live count for it
    assert "uses an archived field" not in body.replace(flagged, "")
    page = admin_client.get(apply_link(body, "Bez umowy")).get_data(as_text=True)
    assert "The field “Contract” is archived" in page
    assert "Bezumowy</strong>" not in page and "Brneński</strong>" not in page
    count = admin_client.get(f"/search/filters/{filter_id}/count").get_data(as_text=True)
    assert "filter-problem" in count and "archived" in count


def test_the_list_page_shows_the_sidebar_and_marks_the_applied_filter(admin_client, rows):
    save(admin_client, "Bez umowy")
    page = admin_client.get("/clients/", query_string={"q": 'Contract < 1 AND city = "Łódź"'})
    body = page.get_data(as_text=True)
    assert "Saved filters" in body and 'class="filter-item active"' in body
    other = admin_client.get("/clients/").get_data(as_text=True)
    assert 'class="filter-item active"' not in other and "Bez umowy" in other


def test_non_htmx_forms_come_back_to_the_list(admin_client, app, rows):
    response = admin_client.post(
        "/search/filters", data={"name": "Plain", "q": "Bezumowy", "sort": "name"}
    )
    assert response.status_code == 302 and "/clients/" in response.headers["Location"]
    with app.app_context():
        filter_id = saved_named("Plain").id
    page = admin_client.get(f"/search/filters/{filter_id}/rename")
    assert page.status_code == 200 and "<html" in page.get_data(as_text=True)
    done = admin_client.post(f"/search/filters/{filter_id}/delete")
    assert done.status_code == 302
    assert "Filter “Plain” deleted." in admin_client.get("/clients/").get_data(as_text=True)


def test_a_deactivated_owners_shared_filter_stays(client, app, rows):
    with app.app_context():
        make_user()
        make_user("ewa@example.com", role="manager", name="Ewa")
    login(client, "ewa@example.com")
    save(client, "Ewa shares", shared="y")
    with app.app_context():
        ewa = db.session.scalar(select(User).where(User.email == "ewa@example.com"))
        ewa.active = False
        db.session.commit()
    client.post("/logout")
    login(client, "admin@example.com")
    assert "Ewa shares" in sidebar(client)
