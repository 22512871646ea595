"""Realistic demo data: Polish, German and Czech clients with diacritics, custom fields,
notes, tasks and deals. Bulk inserts in batches, so 100 000 clients take seconds."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select

from crm.auth.models import User
from crm.clients.models import Client
from crm.deals.models import Deal, DealStage
from crm.extensions import db
from crm.fields.models import CustomField, FieldType
from crm.fields.services import FieldSpec, create_field
from crm.notes.models import Note
from crm.tasks.models import Task
from crm.text import fold

BATCH = 5_000

PEOPLE = {
    "PL": {
        "first_f": [
            "Anna",
            "Małgorzata",
            "Katarzyna",
            "Agnieszka",
            "Zofia",
            "Łucja",
            "Jadwiga",
            "Żaneta",
            "Barbara",
            "Ewa",
            "Joanna",
            "Magdalena",
            "Gabriela",
            "Alicja",
        ],
        "first_m": [
            "Piotr",
            "Krzysztof",
            "Paweł",
            "Michał",
            "Łukasz",
            "Grzegorz",
            "Mikołaj",
            "Bartłomiej",
            "Jakub",
            "Tomasz",
            "Andrzej",
            "Wojciech",
            "Maciej",
            "Zbigniew",
        ],
        "last": [
            "Nowak",
            "Kowalski",
            "Wiśniewski",
            "Wójcik",
            "Kowalczyk",
            "Kamiński",
            "Lewandowski",
            "Zieliński",
            "Szymański",
            "Woźniak",
            "Dąbrowski",
            "Kozłowski",
            "Jankowski",
            "Mazur",
            "Krawczyk",
            "Piątek",
            "Grabowski",
            "Pawłowski",
            "Michalski",
            "Król",
            "Wieczorek",
            "Jabłoński",
            "Górski",
            "Nowakowski",
            "Majewski",
            "Olszewski",
            "Stępień",
            "Jaworski",
            "Malinowski",
            "Dudek",
            "Chmielewski",
            "Żak",
            "Sęk",
            "Gołębiowski",
            "Ślusarczyk",
        ],
        "cities": [
            ("Łódź", "90-001"),
            ("Kraków", "30-001"),
            ("Warszawa", "00-001"),
            ("Gdańsk", "80-001"),
            ("Wrocław", "50-001"),
            ("Poznań", "60-001"),
            ("Szczecin", "70-001"),
            ("Białystok", "15-001"),
            ("Toruń", "87-100"),
            ("Zielona Góra", "65-001"),
            ("Bielsko-Biała", "43-300"),
            ("Rzeszów", "35-001"),
        ],
        "streets": [
            "ul. Piotrkowska",
            "ul. Długa",
            "ul. Świętokrzyska",
            "ul. Żeromskiego",
            "al. Jerozolimskie",
            "ul. Mickiewicza",
            "ul. Słoneczna",
            "ul. Łąkowa",
        ],
        "domains": ["example.com", "example.org"],
    },
    "DE": {
        "first_f": [
            "Anna",
            "Jürgen",
            "Sophie",
            "Lena",
            "Käthe",
            "Jördis",
            "Hannah",
            "Mia",
            "Lea",
            "Ursula",
            "Brigitte",
            "Gisela",
        ],
        "first_m": [
            "Lukas",
            "Jürgen",
            "Björn",
            "Maximilian",
            "Jörg",
            "Günther",
            "Felix",
            "Matthias",
            "Sören",
            "Uwe",
            "Klaus",
            "Dieter",
        ],
        "last": [
            "Müller",
            "Schmidt",
            "Schneider",
            "Fischer",
            "Weber",
            "Meyer",
            "Wagner",
            "Becker",
            "Schulz",
            "Hoffmann",
            "Schäfer",
            "Koch",
            "Bauer",
            "Richter",
            "Klein",
            "Wolf",
            "Schröder",
            "Neumann",
            "Schwarz",
            "Zimmermann",
            "Krüger",
            "Hartmann",
            "Weiß",
            "Groß",
            "Köhler",
            "Böhm",
            "Jäger",
            "Günther",
            "Lößl",
        ],
        "cities": [
            ("München", "80331"),
            ("Köln", "50667"),
            ("Düsseldorf", "40213"),
            ("Berlin", "10115"),
            ("Hamburg", "20095"),
            ("Nürnberg", "90402"),
            ("Lübeck", "23552"),
            ("Görlitz", "02826"),
            ("Würzburg", "97070"),
        ],
        "streets": [
            "Hauptstraße",
            "Schloßallee",
            "Bahnhofstraße",
            "Königstraße",
            "Mühlweg",
            "Gartenstraße",
            "Lindenstraße",
            "Fröbelstraße",
        ],
        "domains": ["example.net", "example.com"],
    },
    "CZ": {
        "first_f": [
            "Jana",
            "Marie",
            "Eva",
            "Hana",
            "Anna",
            "Lenka",
            "Kateřina",
            "Věra",
            "Lucie",
            "Alena",
            "Zdeňka",
            "Růžena",
        ],
        "first_m": [
            "Jiří",
            "Jan",
            "Petr",
            "Josef",
            "Pavel",
            "Tomáš",
            "Jaroslav",
            "Miroslav",
            "Zdeněk",
            "Václav",
            "Michal",
            "Ondřej",
            "Bořivoj",
        ],
        "last": [
            "Novák",
            "Svoboda",
            "Novotný",
            "Dvořák",
            "Černý",
            "Procházka",
            "Kučera",
            "Veselý",
            "Horák",
            "Němec",
            "Pokorný",
            "Marek",
            "Pospíšil",
            "Hájek",
            "Jelínek",
            "Růžička",
            "Beneš",
            "Fiala",
            "Sedláček",
            "Doležal",
            "Zeman",
            "Kolář",
            "Navrátil",
            "Čermák",
            "Vaněk",
            "Urban",
            "Blažek",
            "Kříž",
            "Šťastný",
        ],
        "cities": [
            ("Praha", "110 00"),
            ("Brno", "602 00"),
            ("Ostrava", "702 00"),
            ("Plzeň", "301 00"),
            ("Olomouc", "779 00"),
            ("České Budějovice", "370 01"),
            ("Hradec Králové", "500 02"),
            ("Ústí nad Labem", "400 01"),
            ("Liberec", "460 01"),
        ],
        "streets": [
            "Národní",
            "Václavské náměstí",
            "Husova",
            "Žižkova",
            "Masarykova",
            "Nádražní",
            "Palackého",
            "Komenského",
        ],
        "domains": ["example.org", "example.net"],
    },
}
COUNTRY_WEIGHTS = [("PL", 0.5), ("DE", 0.3), ("CZ", 0.2)]
COMPANIES = [
    "Salon Róża",
    "Warsztat Łukasza",
    "Zahnarztpraxis Müller",
    "Kadeřnictví Věra",
    "Biuro Rachunkowe Żak",
    "Friseur Schöne Haare",
    "Autoservis Dvořák",
    "Studio Urody Łucja",
    "Tischlerei Köhler",
    "Pekárna U Hájků",
]
TAGS = ["VIP", "stały klient", "Stammkunde", "nový klient", "newsletter", "B2B", "polecenie"]
NOTE_TEXTS = [
    "Dzwoniła w sprawie terminu, przełożyła wizytę na przyszły tydzień.",
    "Rückruf vereinbart: Angebot für die Jahreswartung schicken.",
    "Klient se ptal na ceny balíčků, poslat ceník e-mailem.",
    "Spotkanie w salonie, omówiliśmy pakiet zabiegów na wiosnę.",
    "Hat sich über die Wartezeit beschwert, Gutschein angeboten.",
    "Potvrdil objednávku, platba převodem do pátku.",
    "Prosi o kontakt wyłącznie mailowy po 17:00.",
    "Neue Adresse mitgeteilt, Rechnung an die Firma.",
]
DEMO_FIELDS = [
    FieldSpec("Contract", FieldType.CHECKBOX, [], show_in_list=True, personal_data=False),
    FieldSpec("Lifetime value", FieldType.NUMBER, [], show_in_list=True, personal_data=False),
    FieldSpec("Customer since", FieldType.DATE, [], personal_data=False),
    FieldSpec("Preferred contact", FieldType.SINGLE_CHOICE, ["Email", "Phone", "SMS"]),
    FieldSpec("Interests", FieldType.MULTI_CHOICE, ["Hair", "Nails", "Massage", "Cosmetics"]),
    FieldSpec("Birthday", FieldType.DATE, []),
    FieldSpec("Remarks for staff", FieldType.LONG_TEXT, []),
]


def _phone(country: str, rng: random.Random) -> str:
    if country == "PL":
        return (
            f"+48{rng.choice(['501', '602', '691', '725', '790', '888'])}{rng.randrange(10**6):06d}"
        )
    if country == "DE":
        return f"+49{rng.choice(['151', '160', '170', '176'])}{rng.randrange(10**7, 10**8)}"
    return f"+420{rng.choice(['602', '603', '721', '736', '777'])}{rng.randrange(10**6):06d}"


def ensure_demo_fields() -> dict[str, CustomField]:
    existing = {f.label: f for f in db.session.scalars(select(CustomField))}
    for spec in DEMO_FIELDS:
        if spec.label not in existing:
            existing[spec.label] = create_field(spec)
    return existing


def generate_clients(
    count: int, rng: random.Random, keys: dict[str, str], owner_ids: list[int | None]
) -> Iterator[dict[str, Any]]:
    """Row dicts for a bulk insert. `keys` maps demo field labels to their keys."""
    now = datetime.now(UTC)
    countries = [c for c, _ in COUNTRY_WEIGHTS]
    weights = [w for _, w in COUNTRY_WEIGHTS]
    for n in range(count):
        country = rng.choices(countries, weights)[0]
        people = PEOPLE[country]
        female = rng.random() < 0.55
        first = rng.choice(people["first_f" if female else "first_m"])
        last = rng.choice(people["last"])
        if country == "PL" and female and last.endswith("ski"):
            last = last[:-1] + "a"
        elif country == "CZ" and female and not last.endswith("á"):
            last = last.rstrip("aeiouý") + "ová" if not last.endswith("ý") else last[:-1] + "á"
        city, postal = rng.choice(people["cities"])
        company = rng.choice(COMPANIES) if rng.random() < 0.12 else ""
        email = f"{fold(first)}.{fold(last)}.{n}@{rng.choice(people['domains'])}".replace(" ", "")
        phone = _phone(country, rng)
        custom: dict[str, Any] = {keys["Contract"]: 1 if rng.random() < 0.35 else 0}
        if rng.random() < 0.8:
            custom[keys["Lifetime value"]] = round(rng.lognormvariate(6, 1.1), 2)
        if rng.random() < 0.7:
            since = date(2015, 1, 1) + timedelta(days=rng.randrange(4000))
            custom[keys["Customer since"]] = since.isoformat()
        if rng.random() < 0.6:
            custom[keys["Preferred contact"]] = rng.choice(["Email", "Phone", "SMS"])
        if rng.random() < 0.4:
            custom[keys["Interests"]] = sorted(
                rng.sample(["Hair", "Nails", "Massage", "Cosmetics"], rng.randint(1, 2))
            )
        if rng.random() < 0.3:
            custom[keys["Birthday"]] = date(
                rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28)
            ).isoformat()
        created = now - timedelta(days=rng.randrange(1500), seconds=rng.randrange(86400))
        digits = phone.lstrip("+")
        yield {
            "first_name": first,
            "last_name": last,
            "company": company,
            "email": email,
            "phone": phone,
            "street": f"{rng.choice(people['streets'])} {rng.randint(1, 180)}",
            "postal_code": postal,
            "city": city,
            "country": country,
            "owner_id": rng.choice(owner_ids),
            "custom": custom,
            "search_text": fold(
                " ".join(p for p in (first, last, company, email, phone, digits) if p)
            ),
            "created_at": created,
            "updated_at": created,
        }


def insert_clients(rows: Iterator[dict[str, Any]]) -> int:
    """Bulk insert through Core (no ORM objects): ~100k rows in seconds."""
    total = 0
    batch: list[dict[str, Any]] = []
    table = Client.__table__
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            db.session.execute(insert(table), batch)
            total += len(batch)
            batch = []
    if batch:
        db.session.execute(insert(table), batch)
        total += len(batch)
    return total


def ensure_stages() -> list[DealStage]:
    stages = list(db.session.scalars(select(DealStage).order_by(DealStage.position)))
    return stages


def fill_demo(count: int, seed: int = 7, with_activity: bool = True) -> dict[str, int]:
    rng = random.Random(seed)
    fields = ensure_demo_fields()
    keys = {label: f.key for label, f in fields.items()}
    owner_ids: list[int | None] = list(db.session.scalars(select(User.id))) or [None]
    previous_max = db.session.scalar(select(func.max(Client.id))) or 0
    inserted = insert_clients(generate_clients(count, rng, keys, owner_ids))
    stats = {"clients": inserted}
    if with_activity and inserted:
        new_ids = list(
            db.session.scalars(
                select(Client.id).where(Client.id > previous_max).order_by(Client.id).limit(2000)
            )
        )
        stats.update(_activity(rng, new_ids, owner_ids))
        stats.update(_consents(rng, new_ids))
        stats.update(_mailing_lists())
        from crm.appointments.demo import fill_demo_appointments

        stats.update(fill_demo_appointments(rng, new_ids))
    db.session.commit()
    return stats


DEMO_PURPOSES: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    (
        "newsletter",
        "Newsletter",
        {"legal_basis": "a", "channels": ["email"], "retention_months": 12},
        {
            "en": "We email you our newsletter with news and offers about once a month. "
            "You can withdraw at any time with the link in every email.",
            "pl": "Raz w miesiącu wysyłamy newsletter z nowościami i ofertami. "
            "Zgodę można wycofać w każdej chwili linkiem w każdym e-mailu.",
            "de": "Wir senden Ihnen etwa monatlich unseren Newsletter. Sie können die "
            "Einwilligung jederzeit über den Link in jeder E-Mail widerrufen.",
            "cs": "Zhruba jednou měsíčně vám posíláme newsletter. Souhlas můžete kdykoli "
            "odvolat odkazem v každém e-mailu.",
        },
    ),
    (
        "contract",
        "Contract performance and invoicing",
        {
            "legal_basis": "b",
            "channels": ["email", "phone", "post"],
            "retention_months": 60,
            "validity_months": None,
        },
        {
            "en": "We use your contact details to provide the services you book and to "
            "invoice them; invoices are kept as tax law requires."
        },
    ),
]


def _consents(rng: random.Random, ids: list[int]) -> dict[str, int]:
    """Purposes (once) and consent events for the given new clients, bulk inserted; the
    state table is then derived from them and the expiry sweep run, as in production."""
    from crm.consents import services
    from crm.consents.models import ConsentEvent, ConsentPurpose, LegalBasis

    purposes = {p.key: p for p in db.session.scalars(select(ConsentPurpose))}
    for key, name, values, notices in DEMO_PURPOSES:
        if key not in purposes:
            basis = LegalBasis(values["legal_basis"])
            spec = services.PurposeSpec(
                name=name,
                key=key,
                data_categories="name, contact details",
                recipients="email and SMS delivery services (processors)",
                **(values | {"legal_basis": basis}),
            )
            purposes[key] = services.create_purpose(spec, notices, None)
    # Appointment reminders: the purpose the reminder sender asks (legitimate interest).
    from crm.appointments.reminders import reminders_purpose

    purposes["reminders"] = reminders_purpose()
    # The notice each demo consent was given under: English where there is one.
    notice = {}
    for key, purpose in purposes.items():
        latest = services.latest_notices(purpose.id)
        notice[key] = latest.get("en") or next(iter(latest.values()))
    now = datetime.now(UTC)
    rows = []
    for cid in ids:
        for key, share in (("contract", 0.6), ("newsletter", 0.45), ("reminders", 0.7)):
            if rng.random() >= share:
                continue
            purpose = purposes[key]
            given = now - timedelta(days=rng.randrange(1, 760), seconds=rng.randrange(86400))
            base = {"client_id": cid, "purpose_id": purpose.id, "notice_id": notice[key].id}
            expires = services.add_months(given, purpose.validity_months or 0)
            rows.append(
                base
                | {
                    "kind": "given",
                    "method": rng.choice(["phone", "in_person", "web_form", "email"]),
                    "occurred_at": given,
                    "recorded_at": given,
                    "expires_at": expires if purpose.validity_months else None,
                }
            )
            if purpose.is_consent and rng.random() < 0.1:
                withdrawn = given + (min(expires, now) - given) * rng.random()
                rows.append(
                    base
                    | {
                        "kind": "withdrawn",
                        "method": "staff",
                        "occurred_at": withdrawn,
                        "recorded_at": withdrawn,
                        "expires_at": None,
                    }
                )
    for start in range(0, len(rows), BATCH):
        db.session.execute(insert(ConsentEvent.__table__), rows[start : start + BATCH])
    services.rebuild_states(now)
    services.sweep_expiry(now)
    return {"consent events": len(rows)}


def _activity(rng: random.Random, ids: list[int], owner_ids: list[int | None]) -> dict[str, int]:
    """Notes, tasks, deals and tags for the given new clients."""
    from crm.clients.models import client_tags

    now = datetime.now(UTC)
    n = len(ids)
    notes = []
    for cid in ids:
        for _ in range(rng.randint(0, 4)):
            notes.append(
                {
                    "client_id": cid,
                    "kind": rng.choice(["note", "call", "meeting", "email"]),
                    "body": rng.choice(NOTE_TEXTS),
                    "author_id": rng.choice(owner_ids),
                    "occurred_at": now - timedelta(hours=rng.randrange(24 * 400)),
                    "created_at": now,
                }
            )
    if notes:
        db.session.execute(insert(Note.__table__), notes)
    tasks = []
    titles = [
        "Oddzwonić do klienta",
        "Angebot nachfassen",
        "Poslat ceník",
        "Potwierdzić termin",
        "Rechnung prüfen",
    ]
    for cid in rng.sample(ids, min(len(ids), max(1, n // 5))):
        tasks.append(
            {
                "title": rng.choice(titles),
                "client_id": cid,
                "assignee_id": rng.choice(owner_ids),
                "due_date": date.today() + timedelta(days=rng.randint(-10, 30)),
                "status": "open",
                "origin": "manual",
                "created_at": now,
            }
        )
    if tasks:
        db.session.execute(insert(Task.__table__), tasks)
    stages = ensure_stages()
    deals = []
    if stages:
        for cid in rng.sample(ids, min(len(ids), max(1, n // 6))):
            deals.append(
                {
                    "title": rng.choice(
                        [
                            "Pakiet zabiegów",
                            "Jahreswartung",
                            "Svatební účes",
                            "Abonament kwartalny",
                            "Beratungspaket",
                        ]
                    ),
                    "client_id": cid,
                    "amount": Decimal(rng.randrange(200, 20000)),
                    "currency": rng.choice(["PLN", "EUR", "CZK"]),
                    "stage_id": rng.choice(stages).id,
                    "expected_close": date.today() + timedelta(days=rng.randint(-20, 90)),
                    "owner_id": rng.choice(owner_ids),
                    "created_at": now,
                    "updated_at": now,
                }
            )
        db.session.execute(insert(Deal.__table__), deals)
    from crm.clients.services import tags_by_name

    tags = tags_by_name(TAGS)
    db.session.flush()
    links = [
        {"client_id": cid, "tag_id": rng.choice(tags).id}
        for cid in rng.sample(ids, min(len(ids), n // 3))
    ]
    if links:
        db.session.execute(insert(client_tags), links)
    return {"notes": len(notes), "tasks": len(tasks), "deals": len(deals)}


DEMO_LIST_GROUP = "Newsletter"
DEMO_LISTS = [
    ("Newsletter — monthly", "News and offers, once a month."),
    ("Newsletter — weekly", "Short tips every Monday."),
]


def _mailing_lists() -> dict[str, int]:
    """A list group with two lists on the newsletter purpose (once), and a confirmed
    subscription to one of them for every client whose newsletter consent counts and
    who has none yet: two INSERT ... SELECT statements, whatever the number of clients."""
    from sqlalchemy import literal, not_

    from crm.consents.models import ConsentPurpose, ConsentState
    from crm.consents.services import valid_condition
    from crm.mailing import services as mailing
    from crm.mailing.models import ListGroup, MailingList, Subscription, SubscriptionEvent

    purpose = db.session.scalar(select(ConsentPurpose).where(ConsentPurpose.key == "newsletter"))
    if purpose is None:
        return {}
    group = db.session.scalar(select(ListGroup).where(ListGroup.name == DEMO_LIST_GROUP))
    if group is None:
        group = mailing.create_group(DEMO_LIST_GROUP, "Monthly or weekly: the same news.", None)
    lists = []
    for name, description in DEMO_LISTS:
        found = mailing.find_list(name) or mailing.create_list(
            mailing.ListSpec(
                name=name, description=description, group_id=group.id, purpose_id=purpose.id
            ),
            None,
        )
        lists.append(found)
    now = datetime.now(UTC)
    already = select(Subscription.id).where(
        Subscription.client_id == ConsentState.client_id,
        Subscription.list_id.in_([m.id for m in lists]),
    )
    total = 0
    for parity, mlist in enumerate(lists):
        # Even ids on the monthly list, odd ids on the weekly one.
        chosen = select(
            ConsentState.client_id,
            literal(mlist.id),
            literal("confirmed"),
            literal(""),
            literal(now, MailingList.created_at.type),
            literal(now, MailingList.created_at.type),
        ).where(
            ConsentState.purpose_id == purpose.id,
            valid_condition(now),
            ConsentState.client_id % 2 == parity,
            not_(already.exists()),
        )
        result = db.session.execute(
            insert(Subscription.__table__)
            .from_select(
                ["client_id", "list_id", "status", "confirm_nonce", "created_at", "updated_at"],
                chosen,
            )
            .returning(Subscription.__table__.c.id)
        )
        total += len(result.all())
    history = select(
        Subscription.id,
        Subscription.client_id,
        Subscription.list_id,
        literal(""),
        Subscription.status,
        Subscription.created_at,
        literal(""),
        literal(""),
        literal("system"),
    ).where(
        Subscription.list_id.in_([m.id for m in lists]),
        not_(
            select(SubscriptionEvent.id)
            .where(SubscriptionEvent.subscription_id == Subscription.id)
            .exists()
        ),
    )
    db.session.execute(
        insert(SubscriptionEvent.__table__).from_select(
            [
                "subscription_id",
                "client_id",
                "list_id",
                "old_status",
                "status",
                "occurred_at",
                "ip",
                "user_agent",
                "source",
            ],
            history,
        )
    )
    return {"list subscriptions": total}
