"""Client card benchmark: GET /clients/<id> for one client with 20 custom fields filled,
200 notes, 50 consent events over three purposes, some tasks, deals, attachments and
tags, among --clients other clients.

Figures: the full request through the Flask test client (logged in as admin: session,
permission check, queries, render), the card's data alone (views._card_context: the
queries and ORM loading, no render) and a baseline: the bare SQL queries the card needs,
run one after another on one connection.

    .venv/bin/python -m bench.bench_card --backend sqlite
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Flask
from flask_login import login_user
from flask_migrate import upgrade
from sqlalchemy import insert, select, text

from bench import common
from bench.common import Row, Stats
from crm.attachments.models import Attachment
from crm.auth.models import User
from crm.clients import views
from crm.clients.models import Client
from crm.clients.services import tags_by_name
from crm.consents.models import ConsentPurpose, EventKind, Method
from crm.consents.services import latest_notices, record_event
from crm.deals.models import Deal, DealStage
from crm.demo import NOTE_TEXTS, fill_demo
from crm.extensions import db
from crm.fields.models import CustomField, FieldType
from crm.fields.services import FieldSpec, active_fields, create_field
from crm.fields.values import parse_value
from crm.notes.models import Note
from crm.tasks.models import Task

BUDGET_MS = 30.0
RICH_EMAIL = "card.bench@example.com"
NOTES = 200
CONSENT_EVENTS = 50
# 13 fields on top of the 7 demo fields: 20 in all, every type represented.
EXTRA_FIELDS: list[tuple[FieldSpec, Any]] = [
    (FieldSpec("Loyalty card", FieldType.TEXT, []), "LC-2024-00917"),
    (FieldSpec("Referral source", FieldType.TEXT, []), "Polecenie: Zofia Wiśniewska"),
    (FieldSpec("Billing email", FieldType.EMAIL, []), "faktury@example.com"),
    (FieldSpec("Second phone", FieldType.PHONE, []), "+48 501 234 567"),
    (FieldSpec("Website", FieldType.URL, []), "https://example.com/salon"),
    (FieldSpec("Visits", FieldType.NUMBER, []), "37"),
    (FieldSpec("Discount percent", FieldType.NUMBER, []), "12.5"),
    (FieldSpec("Last visit", FieldType.DATE, []), "2025-10-02"),
    (FieldSpec("Newsletter", FieldType.CHECKBOX, []), "yes"),
    (FieldSpec("Skin type", FieldType.SINGLE_CHOICE, ["Dry", "Oily", "Mixed"]), "Mixed"),
    (
        FieldSpec("Hair colour", FieldType.SINGLE_CHOICE, ["Blond", "Brown", "Black", "Red"]),
        "Brown",
    ),
    (
        FieldSpec("Allergies", FieldType.MULTI_CHOICE, ["Latex", "Nickel", "Fragrance"]),
        ["Latex", "Fragrance"],
    ),
    (
        FieldSpec("Notes for reception", FieldType.LONG_TEXT, []),
        "Prefers mornings.\nAlways offer tea, no coffee.\nParks at the back entrance.",
    ),
]
DEMO_VALUES: dict[str, Any] = {
    "Contract": "yes",
    "Lifetime value": "4312.50",
    "Customer since": "2019-03-14",
    "Preferred contact": "SMS",
    "Interests": ["Hair", "Massage"],
    "Birthday": "1984-07-21",
    "Remarks for staff": "Pyta zawsze o promocje; lubi rozmawiać o podróżach.",
}


# --- data ------------------------------------------------------------------------------


def create_fields() -> dict[str, Any]:
    """field key -> stored value for all 20 fields (demo fields exist after fill_demo)."""
    values: dict[str, Any] = {}
    for spec, raw in EXTRA_FIELDS:
        field = create_field(spec)
        values[field.key] = parse_value(field, raw, "PL")
    for field in db.session.scalars(select(CustomField)):
        if field.label in DEMO_VALUES:
            values[field.key] = parse_value(field, DEMO_VALUES[field.label], "PL")
    return values


def create_rich_client(admin_id: int, custom: dict[str, Any]) -> int:
    client = Client(
        first_name="Małgorzata",
        last_name="Żółkiewska-Dąbrowska",
        company="Salon Róża",
        email=RICH_EMAIL,
        phone="+48501234567",
        street="ul. Piotrkowska 101",
        postal_code="90-001",
        city="Łódź",
        country="PL",
        owner_id=admin_id,
        custom=custom,
    )
    client.refresh_search_text()
    client.tags = tags_by_name(["VIP", "stały klient", "newsletter"])
    db.session.add(client)
    db.session.flush()
    return client.id


def add_activity(client_id: int, admin_id: int, rng: random.Random) -> None:
    now = datetime.now(UTC)
    db.session.execute(
        insert(Note.__table__),
        [
            {
                "client_id": client_id,
                "kind": rng.choice(["note", "call", "meeting", "email"]),
                "body": rng.choice(NOTE_TEXTS),
                "author_id": admin_id,
                "occurred_at": now - timedelta(hours=7 * n),
                "created_at": now,
            }
            for n in range(NOTES)
        ],
    )
    db.session.execute(
        insert(Task.__table__),
        [
            {
                "title": f"Zadanie {n}",
                "client_id": client_id,
                "assignee_id": admin_id,
                "due_date": date.today() + timedelta(days=n - 2),
                "status": "open" if n < 5 else "done",
                "origin": "manual",
                "created_at": now,
            }
            for n in range(8)
        ],
    )
    stages = list(db.session.scalars(select(DealStage).order_by(DealStage.position)))
    db.session.execute(
        insert(Deal.__table__),
        [
            {
                "title": f"Pakiet {n}",
                "client_id": client_id,
                "amount": Decimal(500 + 250 * n),
                "currency": "PLN",
                "stage_id": stages[n % len(stages)].id,
                "owner_id": admin_id,
                "expected_close": date.today() + timedelta(days=30),
                "created_at": now,
                "updated_at": now,
            }
            for n in range(4)
        ],
    )
    db.session.execute(
        insert(Attachment.__table__),
        [
            {
                "client_id": client_id,
                "filename": f"umowa-{n}.pdf",
                "content_type": "application/pdf",
                "size_bytes": 20_000 + n,
                "sha256": f"{n:064x}",
                "storage_key": f"bench{n:059x}",
                "uploaded_by_id": admin_id,
                "created_at": now - timedelta(days=n),
            }
            for n in range(6)
        ],
    )


def add_consents(client_id: int, admin_id: int) -> None:
    """50 consent events through the service (so the state table is right), over the
    demo purposes (fill_demo creates them): the newsletter and SMS reminders given and
    withdrawn in turn, the contract given once; newest last, all within the last year."""
    admin = db.session.get(User, admin_id)
    purposes = {p.key: p for p in db.session.scalars(select(ConsentPurpose))}
    start = datetime.now(UTC) - timedelta(days=360)
    record_event(
        client_id,
        purposes["contract"],
        EventKind.GIVEN,
        Method.IN_PERSON,
        notice=latest_notices(purposes["contract"].id)["en"],
        actor=admin,
        now=start,
    )
    for n in range(CONSENT_EVENTS - 1):
        purpose = purposes["newsletter" if n % 4 < 2 else "sms_reminders"]
        kind = EventKind.GIVEN if n % 2 == 0 else EventKind.WITHDRAWN
        record_event(
            client_id,
            purpose,
            kind,
            Method.PHONE if kind == EventKind.GIVEN else Method.STAFF,
            notice=latest_notices(purpose.id)["en"] if kind == EventKind.GIVEN else None,
            actor=admin,
            note=f"bench event {n}",
            now=start + timedelta(days=7 * (n + 1)),
        )


def load(background: int, seed: int) -> None:
    upgrade()
    admin_id = common.create_admin()
    started = time.perf_counter()
    common.loading_pragmas(db.session.connection())
    fill_demo(background, seed=seed)
    custom = create_fields()
    client_id = create_rich_client(admin_id, custom)
    add_activity(client_id, admin_id, random.Random(seed))
    add_consents(client_id, admin_id)
    db.session.commit()
    common.analyze(db.engine)
    db.engine.dispose()
    print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)


# --- timing ----------------------------------------------------------------------------


def baseline_queries(client_id: int, user_id: int) -> list[tuple[str, dict[str, Any]]]:
    """What the card shows, as bare SQL: the signed-in user, the client, its owner and
    tags, the field definitions, the newest 21 notes with authors, attachments, open
    tasks, deals with stage names, the consent states per purpose and the newest 11
    consent events with notice version and actor."""
    ids = {"cid": client_id}
    return [
        (
            "SELECT users.*, roles.permissions FROM users"
            " LEFT JOIN roles ON roles.id = users.role_id WHERE users.id = :uid",
            {"uid": user_id},
        ),
        ("SELECT * FROM clients WHERE id = :cid", ids),
        (
            "SELECT users.full_name, users.email FROM users"
            " JOIN clients ON clients.owner_id = users.id"
            " WHERE clients.id = :cid",
            ids,
        ),
        (
            "SELECT tags.name FROM tags JOIN client_tags ON client_tags.tag_id = tags.id"
            " WHERE client_tags.client_id = :cid ORDER BY tags.name",
            ids,
        ),
        ("SELECT * FROM custom_fields WHERE archived_at IS NULL ORDER BY position, id", {}),
        (
            "SELECT notes.*, users.full_name FROM notes"
            " LEFT JOIN users ON users.id = notes.author_id WHERE notes.client_id = :cid"
            " ORDER BY notes.occurred_at DESC, notes.id DESC LIMIT 21",
            ids,
        ),
        ("SELECT * FROM attachments WHERE client_id = :cid ORDER BY created_at DESC, id DESC", ids),
        (
            "SELECT * FROM tasks WHERE client_id = :cid AND status = 'open'"
            " ORDER BY due_date IS NULL, due_date, id",
            ids,
        ),
        (
            "SELECT deals.*, deal_stages.name AS stage FROM deals"
            " JOIN deal_stages ON deal_stages.id = deals.stage_id"
            " WHERE deals.client_id = :cid ORDER BY deals.created_at DESC",
            ids,
        ),
        (
            "SELECT consent_purposes.*, consent_states.* FROM consent_purposes"
            " LEFT JOIN consent_states ON consent_states.purpose_id = consent_purposes.id"
            " AND consent_states.client_id = :cid"
            " WHERE consent_purposes.archived_at IS NULL OR consent_states.id IS NOT NULL"
            " ORDER BY consent_purposes.name",
            ids,
        ),
        (
            "SELECT consent_events.*, consent_notices.language, consent_notices.version,"
            " users.full_name FROM consent_events"
            " LEFT JOIN consent_notices ON consent_notices.id = consent_events.notice_id"
            " LEFT JOIN users ON users.id = consent_events.actor_id"
            " WHERE consent_events.client_id = :cid ORDER BY consent_events.id DESC LIMIT 11",
            ids,
        ),
    ]


def time_baseline(client_id: int, user_id: int, runs: int) -> Stats:
    conn = db.session.connection()
    queries = [(text(sql), params) for sql, params in baseline_queries(client_id, user_id)]

    def run() -> None:
        for statement, params in queries:
            conn.execute(statement, params).all()

    return common.measure(run, runs)


def time_context(app: Flask, client_id: int, user_id: int, runs: int) -> Stats:
    """The card's queries and ORM loading without the template (fresh session each run)."""

    def run() -> None:
        with app.test_request_context(f"/clients/{client_id}"):
            user = db.session.get(User, user_id)
            assert user is not None
            login_user(user)
            client = db.session.get(Client, client_id)
            assert client is not None
            context = views._card_context(client)
            _ = [note.author for note in context["notes"]]  # type: ignore[attr-defined]
            _ = (client.owner, list(client.tags))

    return common.measure(run, runs)


def time_http(app: Flask, client_id: int, runs: int) -> tuple[Stats, list[str]]:
    client = app.test_client()
    common.login(client)
    url = f"/clients/{client_id}"
    with app.app_context():
        engine = db.engine
    client.get(url)  # warm: the first request loads the process's settings copies
    with common.captured_statements(engine) as seen:
        response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    statements = [common.one_line(s)[:140] for s, _ in seen]
    return common.measure(lambda: client.get(url), runs), statements


def describe(client_id: int) -> dict[str, Any]:
    counts = {
        table: db.session.scalar(text(f"SELECT count(*) FROM {table}")) or 0
        for table in ("clients", "notes", "tasks", "deals", "attachments", "consent_events")
    }
    mine = {
        table: db.session.scalar(
            text(f"SELECT count(*) FROM {table} WHERE client_id = :cid"), {"cid": client_id}
        )
        or 0
        for table in ("notes", "tasks", "deals", "attachments", "consent_events")
    }
    fields = len(active_fields())
    client = db.session.get(Client, client_id)
    filled = len(client.custom) if client else 0
    print(
        f"tables: {counts}; the card's client: {mine}, {filled} of {fields} fields filled",
        flush=True,
    )
    return {"tables": counts, "client": mine, "fields": fields, "filled": filled}


# --- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--clients",
        type=int,
        default=10_000,
        help="other clients (demo data with notes, tasks, deals) around the card",
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse the generated database when it exists (and keep it)",
    )
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    url = common.database_url(args.backend, f"card_{args.clients}")
    reuse = args.keep and common.database_exists(url)
    if not reuse:
        common.create_database(url)
    app = common.make_app(url)
    with app.app_context():
        if reuse:
            print(f"reusing {url}", flush=True)
        else:
            print(f"generating the card client and {args.clients:,} others into {url}", flush=True)
            load(args.clients, args.seed)
        client_id = db.session.scalar(select(Client.id).where(Client.email == RICH_EMAIL))
        user_id = db.session.scalar(select(User.id).where(User.email == common.ADMIN_EMAIL))
        assert client_id is not None and user_id is not None
        meta = describe(client_id)
        base = time_baseline(client_id, user_id, args.runs)
        db.session.rollback()
    context = time_context(app, client_id, user_id, args.runs)
    http, statements = time_http(app, client_id, args.runs)
    print(f"\nstatements per card request: {len(statements)}")
    for statement in statements:
        print(f"  {statement}")
    backend = args.backend
    rows = [
        Row(
            "card",
            "-",
            args.clients,
            backend,
            "HTTP GET /clients/<id>",
            http.median,
            http.p95,
            base.median,
            base.p95,
            BUDGET_MS,
            {"statements": len(statements)},
        ),
        Row(
            "card",
            "-",
            args.clients,
            backend,
            "  data part (no render)",
            context.median,
            context.p95,
            base.median,
            base.p95,
            None,
        ),
    ]
    print()
    common.print_table(rows)
    print(common.load_note())
    if args.json_out:
        common.write_json(args.json_out, rows, meta | vars(args))
    with app.app_context():
        db.engine.dispose()
    if args.drop:
        common.drop_database(url)


if __name__ == "__main__":
    main()
