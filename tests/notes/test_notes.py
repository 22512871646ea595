from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from crm.extensions import db
from crm.notes.models import Note
from tests.conftest import login, make_client, make_user


def test_add_note_shows_newest_first(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    hx = {"HX-Request": "true"}
    admin_client.post(
        f"/clients/{client_id}/notes", data={"kind": "call", "body": "Pierwszy telefon"}, headers=hx
    )
    response = admin_client.post(
        f"/clients/{client_id}/notes",
        data={"kind": "meeting", "body": "Spotkanie w Łodzi"},
        headers=hx,
    )
    body = response.get_data(as_text=True)
    assert body.index("Spotkanie w Łodzi") < body.index("Pierwszy telefon")
    assert "<html" not in body


def test_empty_note_is_refused_with_a_message(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    response = admin_client.post(f"/clients/{client_id}/notes", data={"kind": "note", "body": " "})
    assert "Write something first." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Note)) is None


def test_timeline_pages_with_show_older(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for n in range(45):
            db.session.add(
                Note(
                    client_id=client_id,
                    body=f"wpis {n:02d}",
                    occurred_at=start + timedelta(minutes=n),
                )
            )
        db.session.commit()
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "wpis 44" in card and "wpis 25" in card and "wpis 24" not in card
    assert "Show older entries" in card
    seen: list[int] = []
    token: str | None = _before_token(card)
    for _ in range(5):  # two more pages at most; a loop would mean the cursor is stuck
        if token is None:
            break
        page = admin_client.get(
            f"/clients/{client_id}/notes", query_string={"before": token}
        ).get_data(as_text=True)
        seen += [n for n in range(45) if f"wpis {n:02d}" in page]
        token = _before_token(page) if "Show older entries" in page else None
    assert sorted(seen) == list(range(25))


def _before_token(html: str) -> str:
    import re
    from urllib.parse import unquote

    match = re.search(r"notes\?before=([^\"&]+)", html)
    assert match
    return unquote(match.group(1))


def test_delete_note(admin_client, app):
    with app.app_context():
        client_id = make_client().id
        note = Note(client_id=client_id, body="do usunięcia")
        db.session.add(note)
        db.session.commit()
        note_id = note.id
    assert admin_client.post(f"/notes/{note_id}/delete").status_code == 200
    with app.app_context():
        assert db.session.get(Note, note_id) is None


def test_notes_of_clients_outside_scope_are_unreachable(client, app):
    with app.app_context():
        owner = make_user("owner@example.com", role="sales")
        make_user("other@example.com", role="sales")
        client_id = make_client(owner_id=owner.id).id
        note = Note(client_id=client_id, body="poufne")
        db.session.add(note)
        db.session.commit()
        note_id = note.id
    login(client, "other@example.com")
    assert client.get(f"/clients/{client_id}/notes").status_code == 404
    assert client.post(f"/clients/{client_id}/notes", data={"body": "x"}).status_code == 404
    assert client.post(f"/notes/{note_id}/delete").status_code == 404


def test_times_show_in_the_organisation_time_zone(admin_client, app):
    """Stored in UTC, shown in the organisation's zone (Europe/Warsaw by default)."""
    with app.app_context():
        client_id = make_client().id
        db.session.add(
            Note(
                client_id=client_id,
                body="zimą",
                occurred_at=datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
            )
        )
        db.session.add(
            Note(
                client_id=client_id,
                body="latem",
                occurred_at=datetime(2026, 7, 15, 12, 0, tzinfo=UTC),
            )
        )
        db.session.commit()
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Jan 15, 2026, 1:00\u202fPM" in card or "Jan 15, 2026, 1:00 PM" in card
    assert "Jul 15, 2026, 2:00\u202fPM" in card or "Jul 15, 2026, 2:00 PM" in card
