"""Deals through the HTTP endpoints: the form, the card section, quick stage changes,
the pipeline, scope and escaping."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crm.deals.forms import AmountError, parse_amount
from crm.deals.models import Deal
from crm.extensions import db
from tests.conftest import login, make_client, make_user
from tests.deals.factories import make_deal, stage

HX = {"HX-Request": "true"}


def _deal_count(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Deal)) or 0


def _money(app, amount: str, currency: str) -> str:  # type: ignore[no-untyped-def]
    """What the `money` filter shows in the test locale (English)."""
    with app.test_request_context():
        return app.jinja_env.filters["money"](Decimal(amount), currency)


def _form(client: int | str, **values: str) -> dict[str, str]:
    data = {
        "title": "Hair colour package",
        "client_id": str(client),
        "amount": "",
        "currency": "PLN",
        "stage_id": "",
        "expected_close": "",
        "owner_id": "",
    }
    data.update(values)
    return data


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("1250", "1250.00"),
        ("1250,5", "1250.50"),
        ("1250.50", "1250.50"),
        ("1 234,56", "1234.56"),
        ("1\u00a0234,56", "1234.56"),
        ("1.234,56", "1234.56"),
        ("1,234.56", "1234.56"),
        ("1'234.56", "1234.56"),
        ("0,99", "0.99"),
        ("12,500", "12.50"),  # trailing zero: still two places
        ("", None),
        ("   ", None),
    ],
)
def test_amounts_accept_a_decimal_comma_or_point(typed, stored):
    assert parse_amount(typed) == (Decimal(stored) if stored else None)


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("abc", "Enter an amount"),
        ("12a", "Enter an amount"),
        ("1e5", "Enter an amount"),
        ("NaN", "Enter an amount"),
        ("-5", "negative"),
        ("12,345", "two decimal places"),
        ("1000000000000", "too large"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(typed, reason):
    with pytest.raises(AmountError, match=reason):
        parse_amount(typed)


# --- the form --------------------------------------------------------------------------------


def test_add_deal_from_the_card_with_a_decimal_comma(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        lead_id = stage("Lead").id
        proposal_id = stage("Proposal").id
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert f"/deals/new?client_id={client_id}" in card

    form = admin_client.get(f"/deals/new?client_id={client_id}").get_data(as_text=True)
    assert "Wiśniewska" in form
    assert re.search(r'<option selected value="PLN">|<option value="PLN" selected', form)
    assert re.search(
        rf'<option selected value="{lead_id}">|<option value="{lead_id}" selected', form
    )
    for code in ("EUR", "CZK", "CHF", "GBP", "HUF", "USD"):
        assert f'value="{code}"' in form

    response = admin_client.post(
        f"/deals/new?client_id={client_id}",
        data=_form(
            client_id,
            amount="12 345,67",
            currency="EUR",
            stage_id=str(proposal_id),
            expected_close="2031-06-30",
            next=f"/clients/{client_id}",
        ),
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/clients/{client_id}"
    with app.app_context():
        deal = db.session.scalar(select(Deal))
        assert deal.amount == Decimal("12345.67")
        assert (deal.currency, deal.stage_id, deal.client_id) == ("EUR", proposal_id, client_id)
        assert deal.expected_close == date(2031, 6, 30)
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Hair colour package" in card
    assert _money(app, "12345.67", "EUR") in card


def test_invalid_deal_shows_errors_next_to_fields_and_saves_nothing(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        lead_id = stage("Lead").id
    response = admin_client.post(
        "/deals/new",
        data=_form(client_id, title=" ", amount="12,345", stage_id=str(lead_id)),
    )
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Name the deal." in body
    assert "Use at most two decimal places" in body
    assert 'value="12,345"' in body  # what was typed is kept
    assert body.count('class="field-error"') == 2
    assert _deal_count(app) == 0


def test_a_deal_needs_a_client(admin_client, app):
    with app.app_context():
        lead_id = stage("Lead").id
    response = admin_client.post("/deals/new", data=_form("", stage_id=str(lead_id)))
    assert response.status_code == 200
    assert "Choose the client this deal is with." in response.get_data(as_text=True)
    assert _deal_count(app) == 0


def test_client_search_offers_matching_clients(admin_client, app):
    with app.app_context():
        wanted = make_client(first_name="Růžena", last_name="Šťastná").id
        make_client(first_name="Jürgen", last_name="Groß")
    html = admin_client.get("/deals/clients?q=stastna", headers=HX).get_data(as_text=True)
    assert f'value="{wanted}"' in html and "Šťastná" in html
    assert "Groß" not in html
    assert "checked" in html  # a single match is chosen already
    none = admin_client.get("/deals/clients?q=nobody", headers=HX).get_data(as_text=True)
    assert "No client matches" in none


def test_edit_a_deal(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        deal_id = make_deal("Annual service", client_id, amount="1234.50").id
        won_id = stage("Won").id
    form = admin_client.get(f"/deals/{deal_id}/edit").get_data(as_text=True)
    assert 'value="1234.50"' in form and 'value="Annual service"' in form
    response = admin_client.post(
        f"/deals/{deal_id}/edit",
        data=_form(client_id, title="Annual service 2031", amount="1.500,00", stage_id=str(won_id)),
    )
    assert response.status_code == 302
    with app.app_context():
        deal = db.session.get(Deal, deal_id)
        assert (deal.title, deal.amount, deal.stage_id) == (
            "Annual service 2031",
            Decimal("1500.00"),
            won_id,
        )


def test_delete_a_deal(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        deal_id = make_deal("To be dropped", client_id).id
    form = admin_client.get(f"/deals/{deal_id}/edit").get_data(as_text=True)
    assert "hx-confirm=" in form
    response = admin_client.post(f"/deals/{deal_id}/delete?next=/clients/{client_id}", headers=HX)
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == f"/clients/{client_id}"
    assert _deal_count(app) == 0


# --- quick stage changes -------------------------------------------------------------------------


def test_change_stage_from_the_card_with_htmx(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        deal_id = make_deal("Wedding styling", client_id).id
        negotiation_id = stage("Negotiation").id
    response = admin_client.post(
        f"/deals/{deal_id}/stage?view=card", data={"stage_id": negotiation_id}, headers=HX
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert (
        '<div id="client-deals">' in html and 'id="deals-count" class="count" hx-swap-oob' in html
    )
    assert re.search(rf'<option value="{negotiation_id}" selected>', html)
    with app.app_context():
        assert db.session.get(Deal, deal_id).stage_id == negotiation_id


def test_change_stage_on_the_pipeline_moves_the_deal_to_its_column(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        deal_id = make_deal("Quarterly plan", client_id).id
        qualified_id = stage("Qualified").id
    response = admin_client.post(
        f"/deals/{deal_id}/stage?view=pipeline", data={"stage_id": qualified_id}, headers=HX
    )
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="pipeline">')
    assert "“Quarterly plan” moved to Qualified." in html
    column = html.split(f'id="stage-{qualified_id}"', 1)[1].split("</section>", 1)[0]
    assert "Quarterly plan" in column


def test_change_stage_without_htmx_redirects(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        deal_id = make_deal("Plain form", client_id).id
        lost_id = stage("Lost").id
    response = admin_client.post(
        f"/deals/{deal_id}/stage", data={"stage_id": lost_id, "next": f"/clients/{client_id}"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/clients/{client_id}"
    bad = admin_client.post(f"/deals/{deal_id}/stage", data={"stage_id": "999999"})
    assert bad.status_code == 400


# --- the pipeline --------------------------------------------------------------------------------


def test_pipeline_groups_open_deals_by_stage_with_sums_per_currency(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        make_deal("Lead A", client_id, amount="100.00")
        make_deal("Lead B", client_id, amount="200.50")
        make_deal("Lead C", client_id, amount="50", currency="EUR")
        make_deal("Lead D", client_id)  # no amount yet
        make_deal("Proposal A", client_id, "Proposal", amount="1000")
        make_deal("Won A", client_id, "Won", amount="999.99")
        make_deal("Lost A", client_id, "Lost", amount="10")
        ids = {name: stage(name).id for name in ("Lead", "Proposal", "Won", "Lost")}
    body = admin_client.get("/deals/").get_data(as_text=True)
    lead = body.split(f'id="stage-{ids["Lead"]}"', 1)[1].split("</section>", 1)[0]
    assert '<span class="count">4</span>' in lead
    assert _money(app, "50", "EUR") in lead and _money(app, "300.50", "PLN") in lead
    assert all(t in lead for t in ("Lead A", "Lead B", "Lead C", "Lead D"))
    assert "Proposal A" not in lead
    proposal = body.split(f'id="stage-{ids["Proposal"]}"', 1)[1].split("</section>", 1)[0]
    assert "Proposal A" in proposal
    # Closed deals leave the board; won and lost show as totals.
    assert "Won A" not in body and "Lost A" not in body
    closed = body.split("Won and lost", 1)[1]
    assert _money(app, "999.99", "PLN") in closed and _money(app, "10", "PLN") in closed
    open_total = body.split("Open pipeline", 1)[1].split("</p>", 1)[0]
    assert _money(app, "1300.50", "PLN") in open_total and _money(app, "50", "EUR") in open_total
    # The stage filter lists one stage, won included.
    won = admin_client.get(f"/deals/?stage={ids['Won']}").get_data(as_text=True)
    assert "Won A" in won and "Lead A" not in won
    assert admin_client.get("/deals/?stage=999999").status_code == 404


def test_pipeline_stage_list_paginates(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        lead_id = stage("Lead").id
        for n in range(55):
            make_deal(f"Deal {n:02d}", client_id, expected_close=date(2031, 1, 1 + n % 28))
    first = admin_client.get(f"/deals/?stage={lead_id}").get_data(as_text=True)
    assert len(re.findall(r'class="deal-title"', first)) == 50
    assert "Page 1 of 2" in first
    second = admin_client.get(f"/deals/?stage={lead_id}&page=2").get_data(as_text=True)
    assert len(re.findall(r'class="deal-title"', second)) == 5
    # The board shows the first few of a big stage and links to the rest.
    board = admin_client.get("/deals/").get_data(as_text=True)
    assert "Show all 55" in board


def test_only_mine_filter(admin_client, app):
    with app.app_context():
        from crm.auth.services import find_user

        admin_id = find_user("admin@example.com").id
        colleague = make_user("ola@example.com", role="sales", name="Ola")
        client_id = make_client().id
        make_deal("Owned by me", client_id, owner_id=admin_id)
        make_deal("Owned by Ola", client_id, owner_id=colleague.id)
    everyone = admin_client.get("/deals/").get_data(as_text=True)
    assert "Owned by me" in everyone and "Owned by Ola" in everyone
    mine = admin_client.get("/deals/?mine=1").get_data(as_text=True)
    assert "Owned by me" in mine and "Owned by Ola" not in mine


def test_empty_pipeline_is_friendly(admin_client):
    body = admin_client.get("/deals/").get_data(as_text=True)
    assert 'class="empty"' in body and "No deals yet" in body


# --- scope, permissions, escaping ---------------------------------------------------------


def test_sales_user_cannot_reach_deals_of_clients_outside_their_scope(client, app):
    # One signed-in client per test: requests in a test share one app context (and g).
    with app.app_context():
        admin = make_user()
        sales = make_user("sales@example.com", role="sales", name="Sam Sales")
        foreign = make_client(last_name="Foreign", owner_id=admin.id)
        own = make_client(last_name="Ownclient", owner_id=sales.id)
        hidden = make_deal("Hidden deal", foreign.id, amount="5000")
        make_deal("Visible deal", own.id, amount="10")
        ids = {"deal": hidden.id, "client": foreign.id, "lead": stage("Lead").id}
    login(client, "sales@example.com")
    board = client.get("/deals/").get_data(as_text=True)
    assert "Visible deal" in board
    assert "Hidden deal" not in board and "5,000" not in board
    lead = client.get(f"/deals/?stage={ids['lead']}").get_data(as_text=True)
    assert "Hidden deal" not in lead
    assert client.get(f"/deals/{ids['deal']}/edit").status_code == 404
    assert (
        client.post(f"/deals/{ids['deal']}/stage", data={"stage_id": ids["lead"]}).status_code
        == 404
    )
    assert client.post(f"/deals/{ids['deal']}/delete").status_code == 404
    assert client.get(f"/deals/new?client_id={ids['client']}").status_code == 404
    options = client.get("/deals/clients?q=foreign", headers=HX).get_data(as_text=True)
    assert "Foreign" not in options
    # Posting the id by hand is refused like any unknown client.
    response = client.post("/deals/new", data=_form(ids["client"], stage_id=str(ids["lead"])))
    assert "Choose the client this deal is with." in response.get_data(as_text=True)
    assert _deal_count(app) == 2


def test_readonly_role_sees_deals_without_controls(client, app):
    with app.app_context():
        make_user("viewer@example.com", role="readonly", name="Vera")
        client_id = make_client().id
        deal_id = make_deal("Look only", client_id).id
    login(client, "viewer@example.com")
    board = client.get("/deals/").get_data(as_text=True)
    assert "Look only" in board
    assert 'name="stage_id"' not in board and "New deal" not in board
    assert client.post(f"/deals/{deal_id}/stage", data={"stage_id": "1"}).status_code == 403
    assert client.get("/deals/new").status_code == 403


def test_html_in_deal_titles_is_escaped(admin_client, app):
    payload = '<script>alert("x")</script>'
    with app.app_context():
        client_id = make_client().id
        deal_id = make_deal(payload, client_id, amount="1").id
        lead_id = stage("Lead").id
    for url in (
        "/deals/",
        f"/deals/?stage={lead_id}",
        f"/clients/{client_id}",
        f"/deals/{deal_id}/edit",
    ):
        body = admin_client.get(url).get_data(as_text=True)
        assert "<script>alert" not in body, url
        assert "&lt;script&gt;" in body, url
