from __future__ import annotations

from sqlalchemy import select

from crm.clients.models import Client
from crm.extensions import db
from crm.fields.indexes import existing_indexes
from crm.fields.models import CustomField
from tests.conftest import make_client, make_field


def _index_names(app) -> set[str]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return existing_indexes()


def _field_form(label: str, field_type: str, **extra: str) -> dict[str, str]:
    data = {"label": label, "field_type": field_type, "choices": "", "help_text": ""}
    data.update(extra)
    return data


def test_admin_adds_fields_of_every_type(admin_client, app):
    kinds = [
        "text",
        "long_text",
        "number",
        "date",
        "checkbox",
        "single_choice",
        "multi_choice",
        "email",
        "phone",
        "url",
    ]
    for kind in kinds:
        choices = "Łódź\nKraków" if "choice" in kind else ""
        response = admin_client.post(
            "/admin/fields/new",
            data=_field_form(f"Pole {kind} żółć", kind, choices=choices, show_in_list="y"),
        )
        assert response.status_code == 302, response.get_data(as_text=True)
    page = admin_client.get("/admin/fields/").get_data(as_text=True)
    for kind in kinds:
        assert f"Pole {kind} żółć" in page
    with app.app_context():
        keys = list(db.session.scalars(select(CustomField.key).order_by(CustomField.position)))
    assert keys[0] == "pole_text_zolc"
    names = _index_names(app)
    # Scalar types get an expression index; long text and multi choice do not.
    assert "ix_cf_pole_number_zolc" in names and "ix_cf_pole_checkbox_zolc" in names
    assert "ix_cf_pole_long_text_zolc" not in names
    assert "ix_cf_pole_multi_choice_zolc" not in names


def test_field_validation_messages(admin_client, app):
    with app.app_context():
        make_field("Contract", "checkbox")
    clash = admin_client.post("/admin/fields/new", data=_field_form("contract", "text"))
    assert "exists already" in clash.get_data(as_text=True)
    no_choices = admin_client.post("/admin/fields/new", data=_field_form("Size", "single_choice"))
    assert "at least one choice" in no_choices.get_data(as_text=True)
    empty = admin_client.post("/admin/fields/new", data=_field_form("", "text"))
    assert empty.status_code == 200 and "field-error" in empty.get_data(as_text=True)


def test_type_change_that_would_lose_values_is_refused(admin_client, app):
    with app.app_context():
        field = make_field("Budżet", "text")
        make_client(custom={field.key: "około 5000"})
        make_client(custom={field.key: "12,5"})
        field_id, key = field.id, field.key
    response = admin_client.post(f"/admin/fields/{field_id}", data=_field_form("Budżet", "number"))
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Refused: 1 client values would be lost" in body and "około 5000" in body
    with app.app_context():
        assert db.session.get(CustomField, field_id).field_type == "text"
        values = sorted(c.custom[key] for c in db.session.scalars(select(Client)))
        assert values == ["12,5", "około 5000"]


def test_type_change_that_converts_cleanly_rewrites_values(admin_client, app):
    with app.app_context():
        field = make_field("Budżet", "text")
        make_client(custom={field.key: "12,5"})
        make_client(custom={field.key: "1 000"})
        field_id, key = field.id, field.key
    response = admin_client.post(f"/admin/fields/{field_id}", data=_field_form("Budżet", "number"))
    assert response.status_code == 302
    with app.app_context():
        values = sorted(c.custom[key] for c in db.session.scalars(select(Client)))
        assert values == [12.5, 1000]
    assert f"ix_cf_{key}" in _index_names(app)


def test_removing_a_choice_in_use_is_refused(admin_client, app):
    with app.app_context():
        field = make_field("Kanał", "single_choice", choices=["Email", "SMS"])
        make_client(custom={field.key: "SMS"})
        field_id = field.id
    response = admin_client.post(
        f"/admin/fields/{field_id}",
        data=_field_form("Kanał", "single_choice", choices="Email\nTelefon"),
    )
    assert "would be lost" in response.get_data(as_text=True)
    ok = admin_client.post(
        f"/admin/fields/{field_id}",
        data=_field_form("Kanał", "single_choice", choices="Email\nSMS\nTelefon"),
    )
    assert ok.status_code == 302


def test_archive_hides_the_field_keeps_values_and_restore_brings_it_back(admin_client, app):
    with app.app_context():
        field = make_field("Ulubiona fryzjerka", "text", show_in_list=True)
        client_id = make_client(custom={field.key: "Żaneta"}).id
        field_id, key = field.id, field.key
    admin_client.post(f"/admin/fields/{field_id}/archive")
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "<dt>Ulubiona fryzjerka" not in card
    assert f"ix_cf_{key}" not in _index_names(app)
    with app.app_context():
        assert db.session.get(Client, client_id).custom[key] == "Żaneta"
    admin_client.post(f"/admin/fields/{field_id}/restore")
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "<dt>Ulubiona fryzjerka" in card and "Żaneta" in card
    assert f"ix_cf_{key}" in _index_names(app)


def test_reorder_moves_fields(admin_client, app):
    with app.app_context():
        first = make_field("Pierwsze", "text").id
        second = make_field("Drugie", "text").id
    admin_client.post(
        f"/admin/fields/{second}/move", data={"direction": "up"}, headers={"HX-Request": "true"}
    )
    with app.app_context():
        order = list(db.session.scalars(select(CustomField.id).order_by(CustomField.position)))
    assert order == [second, first]


def test_required_custom_field_is_enforced_on_the_client_form(admin_client, app):
    with app.app_context():
        make_field("Źródło", "text", required=True)
    response = admin_client.post("/clients/new", data={"last_name": "Kowalska", "cf_zrodlo": ""})
    assert response.status_code == 200
    assert "This field is required." in response.get_data(as_text=True)
    ok = admin_client.post("/clients/new", data={"last_name": "Kowalska", "cf_zrodlo": "Polecenie"})
    assert ok.status_code == 302


def test_custom_values_are_validated_by_type_on_the_card(admin_client, app):
    with app.app_context():
        make_field("Wartość", "number")
        client_id = make_client().id
    bad = admin_client.post(
        f"/clients/{client_id}/groups/cf_wartosc/edit", data={"cf_wartosc": "dużo"}
    )
    assert "Enter a number" in bad.get_data(as_text=True)
    good = admin_client.post(
        f"/clients/{client_id}/groups/cf_wartosc/edit", data={"cf_wartosc": "1 234,5"}
    )
    assert "1,234.5" in good.get_data(as_text=True)  # shown in the reader's locale (en)
    with app.app_context():
        assert db.session.get(Client, client_id).custom == {"wartosc": 1234.5}


def test_field_admin_needs_the_permission(client, app):
    from tests.conftest import login, make_user

    with app.app_context():
        make_user("sprzedaz@example.com", role="sales")
    login(client, "sprzedaz@example.com")
    assert client.get("/admin/fields/").status_code == 403
    assert client.post("/admin/fields/new", data=_field_form("X", "text")).status_code == 403
