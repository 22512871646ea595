"""What sending uses: audiences, the per-recipient check (single and batch), the
unsubscribe URL and the per-campaign count."""

from __future__ import annotations

from datetime import timedelta

from crm.consents.models import EventKind, Method
from crm.consents.services import record_event
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import OptIn
from tests.conftest import make_client
from tests.mailing.factories import make_list


def _setup():  # type: ignore[no-untyped-def]
    mlist = make_list("Newsletter PL")
    other = make_list("Newsletter DE")
    ok = make_client(email="ok@example.pl")
    gone = make_client(email="gone@example.pl")
    banned = make_client(email="Banned@example.pl")
    lapsed = make_client(email="lapsed@example.pl")
    pending = make_client(email="pending@example.pl")
    never = make_client(email="never@example.pl")
    blank = make_client(email="")
    for c in (ok, gone, banned, lapsed):
        services.subscribe(c, mlist)
    services.subscribe(never, other)
    db.session.commit()
    services.unsubscribe(services.get_subscription(gone.id, mlist.id))
    services.suppress("banned@example.pl", "hard_bounce")
    # The consent ends in the ledger while the subscription stays (e.g. withdrawn by
    # phone): the ledger wins at send time.
    record_event(lapsed.id, mlist.purpose, EventKind.WITHDRAWN, Method.PHONE)
    double = make_list("Weekly", opt_in=OptIn.DOUBLE)
    services.subscribe(pending, double)
    db.session.commit()
    return mlist, double, locals()


def test_audience_is_confirmed_subscribers_only(ctx):
    mlist, double, c = _setup()
    ids = set(db.session.scalars(services.audience_client_ids([mlist.id])))
    assert ids == {c["ok"].id, c["banned"].id, c["lapsed"].id}
    assert set(db.session.scalars(services.audience_client_ids([double.id]))) == set()
    both = db.session.scalars(services.audience_client_ids([mlist.id, c["other"].id])).all()
    assert len(both) == len(set(both)) == 4


def test_block_reasons_single_and_batch_agree(ctx):
    mlist, double, c = _setup()
    expected = {
        c["ok"].id: None,
        c["gone"].id: "unsubscribed",
        c["banned"].id: "suppressed",
        c["lapsed"].id: "no_consent",
        c["never"].id: "unsubscribed",
        c["blank"].id: "no_email",
    }
    for client_id, reason in expected.items():
        email = db.session.get(services.Client, client_id).email
        assert services.recipient_block_reason(client_id, mlist.id, email) == reason, client_id
    batch = services.blocked_client_ids(list(expected), mlist.id)
    assert batch == {k: v for k, v in expected.items() if v is not None}
    assert (
        services.recipient_block_reason(c["pending"].id, double.id, "pending@example.pl")
        == "unsubscribed"
    )
    # Without a list only the address counts.
    assert services.blocked_client_ids(list(expected), None) == {
        c["banned"].id: "suppressed",
        c["blank"].id: "no_email",
    }
    services.set_list_archived(mlist, True, None)
    assert services.recipient_block_reason(c["ok"].id, mlist.id, "ok@example.pl") == "list_archived"
    assert services.blocked_client_ids([c["ok"].id], mlist.id) == {c["ok"].id: "list_archived"}


def test_consent_expiry_blocks_at_its_instant(ctx):
    mlist, _double, c = _setup()
    later = services.now_utc(None) + timedelta(days=24 * 31 + 1)
    assert (
        services.recipient_block_reason(c["ok"].id, mlist.id, "ok@example.pl", now=later)
        == "no_consent"
    )
    assert services.blocked_client_ids([c["ok"].id], mlist.id, now=later) == {
        c["ok"].id: "no_consent"
    }


def test_batch_check_is_two_queries(app, ctx):
    mlist, _double, c = _setup()
    ids = [c[k].id for k in ("ok", "gone", "banned", "lapsed", "never", "blank")]
    db.session.get(type(mlist), mlist.id)  # the list is in the session already
    statements: list[str] = []
    from sqlalchemy import event

    engine = db.session.get_bind()

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        services.blocked_client_ids(ids, mlist.id)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 3


def test_unknown_campaign_id_still_unsubscribes(ctx):
    mlist, _double, c = _setup()
    sub = services.get_subscription(c["ok"].id, mlist.id)
    services.unsubscribe(sub, campaign_id=987654)
    db.session.commit()
    assert sub.status == "unsubscribed"


def test_suppression_hash_is_of_the_normalised_address(ctx):
    assert services.suppression_hash(" Dvořák@Example.CZ ") == services.suppression_hash(
        "dvořák@example.cz"
    )
    assert len(services.suppression_hash("a@b.c")) == 64
