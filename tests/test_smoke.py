from crm.clients.models import Client
from crm.extensions import db
from tests.conftest import make_client


def test_list_and_card_render(admin_client, app):
    with app.app_context():
        client = make_client(city="Łódź")
        client_id = client.id
    page = admin_client.get("/clients/")
    assert page.status_code == 200
    assert "Wiśniewska" in page.get_data(as_text=True)
    card = admin_client.get(f"/clients/{client_id}")
    assert card.status_code == 200


def test_rows_do_not_leak_between_tests(app):
    with app.app_context():
        assert db.session.query(Client).count() == 0
