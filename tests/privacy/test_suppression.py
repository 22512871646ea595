"""Keyed suppression hashes of emails and phones, the entries from before the key,
and an erased person coming back through an import."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
from pathlib import Path

import sqlalchemy as sa

from crm.campaigns import services as campaigns
from crm.campaigns.models import Delivery
from crm.clients.models import Client
from crm.extensions import db
from crm.mailing import importer
from crm.mailing import services as mailing
from crm.mailing.models import Subscription, Suppression, SuppressionKey
from tests.campaigns.conftest import (
    make_campaign,
    make_list,
    smtp,  # noqa: F401 (fixture)
    smtp_server,  # noqa: F401 (fixture)
    subscribed_clients,
)
from tests.conftest import make_client

MIGRATION = Path(__file__).parents[2] / "migrations" / "versions" / "0011_erasure.py"


def _legacy(email: str) -> str:
    return hashlib.sha256(mailing.normalise_email(email).encode()).hexdigest()


def test_hashes_are_keyed_per_installation_and_normalised(ctx):
    secret = db.session.scalar(sa.select(SuppressionKey.secret))
    assert secret and len(secret) >= 64
    digest = mailing.suppression_hash(" Dvořák@Example.CZ ")
    assert digest == mailing.suppression_hash("dvořák@example.cz")
    assert digest != _legacy("dvořák@example.cz")  # not guessable without the key
    expected = hmac.new(secret.encode(), "email:dvořák@example.cz".encode(), hashlib.sha256)
    assert digest == expected.hexdigest()
    # Phones in E.164, national numbers read in the organisation's region (PL).
    assert mailing.normalise_phone("601 234 567") == "+48601234567"
    assert mailing.normalise_phone("+48 (601) 234-567") == "+48601234567"
    assert mailing.normalise_phone("not a phone") == ""
    assert mailing.phone_suppression_hash("601-234-567") == mailing.phone_suppression_hash(
        "+48601234567"
    )
    assert mailing.phone_suppression_hash("601234567") != mailing.suppression_hash("601234567")


def test_phones_are_suppressed_on_their_own(ctx):
    assert not mailing.is_phone_suppressed("+48601234567")
    mailing.suppress_phone("601 234 567", "erased")
    mailing.suppress_phone("+48601234567", "manual")  # idempotent, the first reason stays
    db.session.commit()
    rows = db.session.execute(sa.select(Suppression.kind, Suppression.reason)).all()
    assert rows == [("phone", "erased")]
    assert mailing.is_phone_suppressed("+48 601 234 567")
    assert not mailing.is_phone_suppressed("+48601234568")
    assert not mailing.is_phone_suppressed("")
    assert not mailing.is_suppressed("601234567")  # a phone entry never blocks an email


def test_entries_from_before_the_key_still_suppress(ctx):
    mlist = make_list("Newsletter")
    [client] = subscribed_clients(mlist, 1)
    db.session.add(
        Suppression(
            email_hash=_legacy(client.email), kind="email", scheme="sha256", reason="manual"
        )
    )
    db.session.commit()
    assert mailing.is_suppressed(client.email.upper())
    assert mailing.blocked_client_ids([client.id], mlist.id) == {client.id: "suppressed"}
    assert mailing.suppressed_emails([client.email, "other@example.pl"]) == {
        mailing.normalise_email(client.email)
    }
    mailing.suppress(client.email, "hard_bounce")  # already suppressed: no second entry
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 1


def test_the_migration_rekeys_entries_whose_address_is_on_a_card(ctx):
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    make_client(email="Known@Example.pl")
    db.session.add_all(
        [
            Suppression(email_hash=_legacy("known@example.pl"), scheme="sha256", reason="manual"),
            Suppression(email_hash=_legacy("gone@example.pl"), scheme="sha256", reason="erased"),
        ]
    )
    db.session.commit()
    secret = db.session.scalar(sa.select(SuppressionKey.secret))
    module._rekey_known_addresses(db.session.connection(), secret)
    rows = dict(db.session.execute(sa.select(Suppression.email_hash, Suppression.scheme)).all())
    assert rows == {
        mailing.suppression_hash("known@example.pl"): "hmac",
        _legacy("gone@example.pl"): "sha256",  # unknown address: kept as it was
    }
    assert mailing.is_suppressed("known@example.pl") and mailing.is_suppressed("gone@example.pl")


def _erase(app, admin_client, client_id: int, name: str) -> None:  # type: ignore[no-untyped-def]
    response = admin_client.post(f"/clients/{client_id}/erase", data={"confirmation": name})
    assert response.status_code == 303, response.get_data(as_text=True)


def test_an_erased_person_imported_again_is_flagged_not_added_and_not_mailed(
    app,
    admin_client,
    smtp,  # noqa: F811
    tmp_path,
):
    with app.app_context():
        mlist = make_list("Newsletter")
        [erased] = subscribed_clients(mlist, 1, first_name="Mária", last_name="Horváthová")
        erased_id, email = erased.id, erased.email
        db.session.get(Client, erased_id).phone = "+420601234567"
        db.session.commit()
        list_id = mlist.id
    _erase(app, admin_client, erased_id, "Mária Horváthová")

    path = tmp_path / "again.csv"
    path.write_text(
        "first_name,last_name,email,phone\n"
        f"Mária,Horváthová,{email.upper()},\n"
        "Máša,H.,masa@example.sk,+420 601 234 567\n"
        "Nový,Klient,novy@example.cz,\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.csv"
    result = app.test_cli_runner().invoke(
        args=[
            "import",
            "clients",
            str(path),
            "--list",
            "Newsletter",
            "--basis",
            "consent",
            "--report",
            str(report),
        ]
    )
    assert result.exit_code == 0, result.output
    lines = report.read_text(encoding="utf-8").splitlines()
    assert any(
        line.startswith("2,") and "Suppressed address: not subscribed" in line for line in lines
    )
    assert any(line.startswith("3,") and "Suppressed phone number" in line for line in lines)
    with app.app_context():
        emails = set(db.session.scalars(sa.select(Client.email)))
        assert mailing.normalise_email(email) not in {mailing.normalise_email(e) for e in emails}
        assert "masa@example.sk" not in emails and "novy@example.cz" in emails
        subscribers = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Subscription)
            .where(Subscription.list_id == list_id)
        )
        assert subscribers == 1  # the new client only

        campaign = make_campaign([list_id])
        campaigns.start_sending(campaign, campaign.created_by)
        db.session.commit()
        campaigns.work_on_campaign(campaign.id)
        sent = set(
            db.session.scalars(sa.select(Delivery.email).where(Delivery.campaign_id == campaign.id))
        )
        assert sent == {"novy@example.cz"}
    assert email not in {r.lower() for r in smtp.recipients()}


def test_an_import_through_the_page_flags_the_erased_address(ctx):
    mlist = make_list("Newsletter")
    [erased] = subscribed_clients(mlist, 1)
    email = erased.email
    mailing.suppress(email, "erased")
    db.session.execute(sa.delete(Client).where(Client.id == erased.id))
    db.session.commit()
    from io import StringIO

    result = importer.import_clients(StringIO(f"email\n{email}\n"), "Newsletter", "consent")
    assert result.created == 0 and result.subscribed == 0
    [error] = result.errors
    assert error.row == 2 and error.message.startswith("Suppressed address: not subscribed")
