"""Login throttling lives in the database: per account and per client address."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import func, select

from crm.auth.services import create_user
from crm.extensions import db
from crm.security import services
from crm.security.models import LoginAttempt
from crm.sqltypes import utcnow
from tests.conftest import TEST_PASSWORD, make_test_app

THROTTLED = "Too many attempts. Try again in a few minutes."


def _attempt(client, email: str, password: str, ip: str):  # type: ignore[no-untyped-def]
    client.environ_base["REMOTE_ADDR"] = ip
    return client.post("/login", data={"email": email, "password": password})


def _fail(client, times: int, ip: str, email: str | None = None) -> None:  # type: ignore[no-untyped-def]
    for i in range(times):
        who = email or f"ghost{i}@example.com"
        response = _attempt(client, who, "wrong password here", ip)
        assert response.status_code == 200, i
        assert "Wrong email or password." in response.get_data(as_text=True)


def test_twenty_failures_from_one_address_throttle_it_even_for_the_right_password(
    client, app, admin
):
    _fail(client, 20, "198.51.100.7")  # twenty different (unknown) accounts
    response = _attempt(client, "admin@example.com", TEST_PASSWORD, "198.51.100.7")
    assert response.status_code == 429
    assert THROTTLED in response.get_data(as_text=True)
    assert "Wrong email or password." not in response.get_data(as_text=True)
    # Another address is not affected.
    assert _attempt(client, "admin@example.com", TEST_PASSWORD, "203.0.113.4").status_code == 302


def test_ten_failures_throttle_the_account_from_every_address(client, app, admin):
    _fail(client, 10, "198.51.100.7", email="Admin@Example.com")
    other = app.test_client()
    response = _attempt(other, "admin@example.com", TEST_PASSWORD, "203.0.113.4")
    assert response.status_code == 429
    assert THROTTLED in response.get_data(as_text=True)


def test_unknown_accounts_are_throttled_the_same_way(client, app):
    _fail(client, 10, "198.51.100.7", email="ghost@example.com")
    response = _attempt(client, "ghost@example.com", "anything at all", "203.0.113.4")
    assert response.status_code == 429 and THROTTLED in response.get_data(as_text=True)


def test_nine_failures_and_a_success_do_not_throttle_nor_erase_failures(client, app, admin):
    _fail(client, 9, "198.51.100.7", email="admin@example.com")
    assert _attempt(client, "admin@example.com", TEST_PASSWORD, "203.0.113.4").status_code == 302
    client.post("/logout")
    with app.app_context():
        failures = db.session.scalar(
            select(func.count(LoginAttempt.id)).where(LoginAttempt.success.is_(False))
        )
        assert failures == 9
        successes = db.session.scalars(select(LoginAttempt).where(LoginAttempt.success)).all()
        assert [(a.email, a.ip) for a in successes] == [("admin@example.com", "203.0.113.4")]
    _fail(client, 1, "198.51.100.7", email="admin@example.com")
    assert _attempt(client, "admin@example.com", TEST_PASSWORD, "203.0.113.4").status_code == 429


def test_failures_outside_the_window_do_not_count_and_can_be_pruned(app):
    with app.app_context():
        old = utcnow() - services.THROTTLE_WINDOW - timedelta(minutes=1)
        for _ in range(25):
            db.session.add(
                LoginAttempt(
                    created_at=old, ip="198.51.100.7", email="a@example.com", success=False
                )
            )
        db.session.commit()
        assert not services.login_throttled("198.51.100.7", "a@example.com")
        assert services.login_throttled(
            "198.51.100.7", "a@example.com", now=old + timedelta(minutes=1)
        )
        assert services.prune_login_attempts(utcnow() - services.THROTTLE_WINDOW) == 25
        db.session.commit()
        assert db.session.scalar(select(func.count(LoginAttempt.id))) == 0


def test_throttling_is_shared_by_two_app_instances(tmp_path: Path, monkeypatch):
    """Two processes share only the database: failures seen by one throttle the other.

    A fresh file database outside the per-test transaction, so each app uses its own
    engine, connections and sessions, exactly as two web processes would.
    """
    monkeypatch.setenv("CRM_INSTANCE_PATH", str(tmp_path / "instance"))
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first = make_test_app(url, tmp_path / "one")
    second = make_test_app(url, tmp_path / "two")
    try:
        with first.app_context():
            upgrade()
            create_user("admin@example.com", TEST_PASSWORD, "admin")
            db.session.commit()
            first_engine = db.engine
        with second.app_context():
            assert db.engine is not first_engine
        _fail(first.test_client(), 10, "198.51.100.7", email="admin@example.com")
        response = _attempt(second.test_client(), "admin@example.com", TEST_PASSWORD, "203.0.113.4")
        assert response.status_code == 429
        # The per-address limit crosses instances as well.
        _fail(first.test_client(), 20, "192.0.2.50")
        response = _attempt(second.test_client(), "new@example.com", "whatever", "192.0.2.50")
        assert response.status_code == 429
    finally:
        for application in (first, second):
            with application.app_context():
                db.engine.dispose()
