"""Double booking is impossible: twenty parallel bookings of the last seat(s), against
the app served over real HTTP connections (a server thread with a real database, not
the test client inside a rolled-back transaction), on SQLite and on PostgreSQL."""

from __future__ import annotations

import http.client
import logging
import os
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import make_server

from crm.config import normalise_database_url
from crm.extensions import db
from tests.appointments.factories import admin_id, every_day, local, make_service, next_week
from tests.conftest import BACKENDS, PG_URL, TEST_PASSWORD, make_test_app

PARALLEL = 20


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Flask, int]]:
    tmp: Path = tmp_path_factory.mktemp("booking-race")
    admin_engine = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'race.sqlite3'}"
    else:
        admin_url = normalise_database_url(PG_URL or "")
        name = f"crm_race_{uuid.uuid4().hex[:10]}"
        admin_engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    os.environ.setdefault("CRM_INSTANCE_PATH", str(tmp_path_factory.mktemp("instance")))
    app = make_test_app(url, tmp, PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        from crm.auth.services import create_user

        upgrade()
        create_user("admin@example.com", TEST_PASSWORD, "admin", full_name="Ada Admin")
        db.session.commit()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        with app.app_context():
            db.engine.dispose()
        if admin_engine is not None:
            with admin_engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin_engine.dispose()


def _login(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = urllib.parse.urlencode({"email": "admin@example.com", "password": TEST_PASSWORD})
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    assert response.status == 302
    cookie = response.getheader("Set-Cookie") or ""
    conn.close()
    return cookie.split(";", 1)[0]


def _post(port: int, cookie: str, path: str, fields: dict[str, object]) -> tuple[int, str]:
    """One booking on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        path,
        urllib.parse.urlencode(fields),
        {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def _race(app: Flask, port: int, capacity: int, already: int, name: str) -> tuple[list[int], int]:
    start = local(next_week(), 11)
    with app.app_context():
        from crm.appointments import services
        from tests.conftest import make_client

        staff = admin_id()
        every_day(staff)
        service = make_service([staff], name=name, capacity=capacity, duration_minutes=90)
        clients = [
            make_client(last_name=f"Kowalczyk-{name}-{n}").id for n in range(PARALLEL + already)
        ]
        for client_id in clients[:already]:
            db.session.commit()
            services.book(
                service=service,
                staff_id=staff,
                client_id=client_id,
                starts_at=start.astimezone(UTC),
            )
            db.session.commit()
        service_id = service.id
    cookie = _login(port)
    barrier = threading.Barrier(PARALLEL)

    def attempt(client_id: int) -> tuple[int, str]:
        barrier.wait()
        return _post(
            port,
            cookie,
            "/appointments/new",
            {
                "staff": staff,
                "start": start.isoformat(),
                "service_id": service_id,
                "client_id": client_id,
            },
        )

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(attempt, clients[already:]))
    for status, text in results:
        assert status in (302, 409), (status, text[:500])
        if status == 409:
            assert "just taken" in text
    with app.app_context():
        from sqlalchemy import func, select

        from crm.appointments.models import Appointment

        held = db.session.scalar(
            select(func.count())
            .select_from(Appointment)
            .where(Appointment.service_id == service_id, Appointment.status != "cancelled")
        )
    return [status for status, _text in results], held or 0


def test_twenty_parallel_bookings_of_the_last_seat(served):
    app, port = served
    statuses, held = _race(app, port, capacity=3, already=2, name="Ostatnie miejsce")
    assert statuses.count(302) == 1
    assert statuses.count(409) == PARALLEL - 1
    assert held == 3


def test_twenty_parallel_bookings_of_a_workshop_fill_exactly_its_seats(served):
    app, port = served
    # On another day, so the first race's session does not overlap.
    statuses, held = _race_other_day(app, port)
    assert statuses.count(302) == 4
    assert statuses.count(409) == PARALLEL - 4
    assert held == 4


def _race_other_day(app: Flask, port: int) -> tuple[list[int], int]:
    import tests.appointments.test_concurrency as me

    original = me.next_week
    me.next_week = lambda: original() + __import__("datetime").timedelta(days=1)
    try:
        return _race(app, port, capacity=4, already=0, name="Warsztaty Dvořák")
    finally:
        me.next_week = original
