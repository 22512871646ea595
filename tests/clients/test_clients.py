from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from crm.auth.models import User
from crm.clients.models import Client
from crm.extensions import db
from crm.notes.models import Note
from tests.conftest import login, make_client, make_field, make_user

DIACRITIC_NAMES = [
    ("Łucja", "Dvořák-Müller", "Łódź"),
    ("Jürgen", "Groß", "Köln"),
    ("Růžena", "Šťastná", "Plzeň"),
    ("Grzegorz", "Brzęczyszczykiewicz", "Łęczyca"),
]


def _new_client(http, **fields):  # type: ignore[no-untyped-def]
    data = {
        "first_name": "Łucja",
        "last_name": "Dvořák-Müller",
        "city": "Łódź",
        "email": "",
        "phone": "",
        "owner_id": "",
        "country": "",
        "tags": "",
    }
    data.update(fields)
    return http.post("/clients/new", data=data)


@pytest.mark.parametrize(("first", "last", "city"), DIACRITIC_NAMES)
def test_diacritics_round_trip_through_form_card_list_and_search(
    admin_client, app, first, last, city
):
    response = _new_client(
        admin_client,
        first_name=first,
        last_name=last,
        city=city,
        email=f"{last.lower()}@example.com".replace("ß", "ss"),
    )
    assert response.status_code == 302
    card_url = response.headers["Location"]
    card = admin_client.get(card_url).get_data(as_text=True)
    assert first in card and last in card and city in card
    listing = admin_client.get("/clients/").get_data(as_text=True)
    assert f"{first} {last}" in listing
    with app.app_context():
        stored = db.session.scalar(select(Client).where(Client.last_name == last))
        assert (stored.first_name, stored.city) == (first, city)
    # Quick search is case- and accent-insensitive, and exact spelling works too.
    folded_last = {
        "Dvořák-Müller": "dvorak",
        "Groß": "gross",
        "Šťastná": "stastna",
        "Brzęczyszczykiewicz": "brzeczyszczykiewicz",
    }[last]
    for query in (last, folded_last, last.upper()):
        found = admin_client.get("/clients/", query_string={"q": query}).get_data(as_text=True)
        assert f"{first} {last}" in found, query


def test_create_validates_and_keeps_what_was_typed(admin_client, app):
    response = _new_client(admin_client, email="zofia@@example", phone="12")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "valid email address" in body
    assert "phone number" in body
    assert 'value="zofia@@example"' in body and 'value="12"' in body
    assert "Łucja" in body  # the rest of the form is kept too
    with app.app_context():
        assert db.session.scalar(select(Client)) is None


def test_a_name_or_company_is_required(admin_client):
    response = _new_client(admin_client, first_name=" ", last_name="", company="")
    assert response.status_code == 200
    assert "Enter a name or a company." in response.get_data(as_text=True)


def test_phone_is_stored_as_e164_using_the_default_region(admin_client, app):
    _new_client(admin_client, phone="601 234 567")  # organisation default region: PL
    with app.app_context():
        assert db.session.scalar(select(Client.phone)) == "+48601234567"
    listing = admin_client.get("/clients/").get_data(as_text=True)
    assert "+48 601 234 567" in listing


def test_email_is_normalised(admin_client, app):
    _new_client(admin_client, email="Zofia.Nowak@EXAMPLE.com")
    with app.app_context():
        assert db.session.scalar(select(Client.email)) == "Zofia.Nowak@example.com"


def test_inline_edit_of_one_group(admin_client, app):
    with app.app_context():
        client_id = make_client(email="old@example.com").id
    hx = {"HX-Request": "true"}
    editor = admin_client.get(f"/clients/{client_id}/groups/email/edit", headers=hx)
    body = editor.get_data(as_text=True)
    assert 'class="inline-edit"' in body and 'value="old@example.com"' in body
    assert "<html" not in body  # a fragment, not a page
    saved = admin_client.post(
        f"/clients/{client_id}/groups/email/edit", data={"email": "nowy@example.pl"}, headers=hx
    )
    assert saved.status_code == 200
    assert "nowy@example.pl" in saved.get_data(as_text=True)
    assert 'class="editable"' in saved.get_data(as_text=True)
    assert "HX-Request" in saved.headers["Vary"]
    with app.app_context():
        assert db.session.get(Client, client_id).email == "nowy@example.pl"


def test_every_group_on_the_card_opens_its_own_editor(admin_client, app):
    import re

    from flask import url_for

    with app.app_context():
        make_field("Kundennummer", "text")
        client_id = make_client(email="old@example.com", custom={"kundennummer": "K-1"}).id
    body = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    editors = dict(re.findall(r'id="grp-([a-z0-9_]+)"[^>]*?hx-get="([^"]+)"', body, re.S))
    assert {"name", "email", "phone", "address", "owner", "tags", "cf_kundennummer"} <= set(editors)
    with app.test_request_context():
        for group, href in editors.items():
            assert href == url_for("clients.edit_group", client_id=client_id, group=group)
    hx = {"HX-Request": "true"}
    editor = admin_client.get(editors["cf_kundennummer"], headers=hx)
    assert editor.status_code == 200 and 'value="K-1"' in editor.get_data(as_text=True)


def test_inline_edit_error_comes_back_next_to_the_input_and_saves_nothing(admin_client, app):
    with app.app_context():
        client_id = make_client(email="old@example.com").id
    response = admin_client.post(
        f"/clients/{client_id}/groups/email/edit",
        data={"email": "not-an-email"},
        headers={"HX-Request": "true"},
    )
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "field-error" in body and 'value="not-an-email"' in body
    with app.app_context():
        assert db.session.get(Client, client_id).email == "old@example.com"


def test_inline_edit_of_unknown_group_is_404(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    assert admin_client.get(f"/clients/{client_id}/groups/password/edit").status_code == 404


def test_custom_checkbox_inline_and_in_list(admin_client, app):
    with app.app_context():
        make_field("Contract", "checkbox", show_in_list=True)
        client_id = make_client().id
    admin_client.post(f"/clients/{client_id}/groups/cf_contract/edit", data={"cf_contract": "y"})
    with app.app_context():
        assert db.session.get(Client, client_id).custom == {"contract": 1}
    listing = admin_client.get("/clients/").get_data(as_text=True)
    assert ">Contract</a>" in listing
    assert re.search(r"<td\s*>Yes</td>", listing)
    # Unticking stores 0 (an unticked box is false, never missing).
    admin_client.post(f"/clients/{client_id}/groups/cf_contract/edit", data={})
    with app.app_context():
        assert db.session.get(Client, client_id).custom == {"contract": 0}


PAYLOADS = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>']


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_payloads_render_escaped_everywhere(admin_client, app, payload):
    with app.app_context():
        make_field("Remarks", "text", show_in_list=True)
        make_field("Long remarks", "long_text")
    response = _new_client(
        admin_client,
        first_name=payload,
        last_name=payload,
        company=payload,
        city=payload,
        street=payload,
        postal_code=payload[:20],
        tags=payload,
        cf_remarks=payload,
        cf_long_remarks=payload,
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    client_id = int(response.headers["Location"].rsplit("/", 1)[1])
    admin_client.post(f"/clients/{client_id}/notes", data={"kind": "note", "body": payload})
    pages = [
        admin_client.get(f"/clients/{client_id}"),
        admin_client.get("/clients/", query_string={"columns": "all"}),
        admin_client.get(f"/clients/{client_id}/groups/name/edit"),
        admin_client.get(f"/clients/{client_id}/edit"),
    ]
    for page in pages:
        body = page.get_data(as_text=True)
        assert "<script>alert" not in body
        assert "<img src=x" not in body
    card = pages[0].get_data(as_text=True)
    assert "&lt;script&gt;" in card or "&#34;&gt;&lt;img" in card


def test_delete_needs_confirmation_and_removes_everything(admin_client, app):
    with app.app_context():
        client = make_client()
        client_id = client.id
        db.session.add(Note(client_id=client_id, body="Rozmowa telefoniczna"))
        db.session.commit()
    confirm = admin_client.get(f"/clients/{client_id}/delete")
    assert "Delete for good" in confirm.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Client, client_id) is not None
    done = admin_client.post(f"/clients/{client_id}/delete")
    assert done.status_code == 303
    with app.app_context():
        assert db.session.get(Client, client_id) is None
        assert db.session.scalar(select(Note).where(Note.client_id == client_id)) is None
    assert admin_client.get(f"/clients/{client_id}").status_code == 404


def test_delete_from_htmx_redirects_the_whole_page(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    response = admin_client.post(f"/clients/{client_id}/delete", headers={"HX-Request": "true"})
    assert response.headers["HX-Redirect"] == "/clients/"


def test_sales_user_sees_only_own_clients(client, app):
    with app.app_context():
        seller = make_user("anna@example.com", role="sales", name="Anna")
        other = make_user("piotr@example.com", role="sales", name="Piotr")
        mine = make_client(last_name="Mój", owner_id=seller.id).id
        theirs = make_client(last_name="Cudzy", owner_id=other.id).id
    login(client, "anna@example.com")
    listing = client.get("/clients/").get_data(as_text=True)
    assert "Mój" in listing and "Cudzy" not in listing
    assert client.get(f"/clients/{mine}").status_code == 200
    # Outside the scope: 404, not 403, so ids cannot be probed.
    assert client.get(f"/clients/{theirs}").status_code == 404
    assert (
        client.post(f"/clients/{theirs}/groups/email/edit", data={"email": "a@b.pl"}).status_code
        == 404
    )
    search = client.get("/clients/", query_string={"q": "Cudzy"}).get_data(as_text=True)
    assert "No client matches" in search  # the query is echoed, but no row is shown
    assert client.get(f"/clients/{theirs}/delete").status_code in (403, 404)


def test_empty_state_and_no_match_state(admin_client):
    empty = admin_client.get("/clients/").get_data(as_text=True)
    assert "No clients yet" in empty
    missing = admin_client.get("/clients/", query_string={"q": "nikogo"}).get_data(as_text=True)
    assert "No client matches" in missing


def test_column_chooser_is_remembered(admin_client, app):
    with app.app_context():
        make_client(city="Gdańsk", company="Salon Róża")
    admin_client.post("/clients/columns", data={"columns": ["company", "tags"]})
    listing = admin_client.get("/clients/").get_data(as_text=True)
    headers = re.findall(r"<th[^>]*>(.*?)</th>", listing, flags=re.S)
    labels = [re.sub(r"<[^>]+>", "", h).strip() for h in headers]
    assert labels == ["Name", "Company", "Tags"]
    admin_client.post("/clients/columns", data={"reset": "1"})
    assert ">City</a>" in admin_client.get("/clients/").get_data(as_text=True)


def test_the_card_loads_other_users_without_their_secrets(admin_client, app):
    """Only the signed-in user's own row is loaded whole; the owner, note authors, task
    assignees and deal owners shown on the card bring only what their name needs."""
    from sqlalchemy import event

    with app.app_context():
        make_user("owner@example.com", role="sales", name="Olga Owner")
        owner = db.session.scalar(db.select(User).where(User.email == "owner@example.com"))
        client_id = make_client(email="card@example.com", owner_id=owner.id).id
    admin_client.get(f"/clients/{client_id}")
    seen: list[str] = []

    def remember(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        body = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    assert "Olga Owner" in body
    with_secrets = [s for s in seen if "password_hash" in s or "totp_secret" in s]
    assert len(with_secrets) == 1 and "session_token" in with_secrets[0]  # the loader
