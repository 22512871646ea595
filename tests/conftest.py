"""Shared fixtures.

Every test runs on SQLite, and again on PostgreSQL when CRM_TEST_DATABASE_URL is set
(the `app` fixture is parametrised by backend). The schema is built once per backend by
the Alembic migrations themselves; each test then runs inside a transaction that is
rolled back, so tests never see each other's rows (commits inside a test become
savepoint releases).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from flask_sqlalchemy.session import _app_ctx_id
from sqlalchemy.orm import scoped_session, sessionmaker

from crm import create_app, queue
from crm.config import normalise_database_url
from crm.extensions import db

PG_URL = os.environ.get("CRM_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
TEST_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        return
    admin_url = normalise_database_url(PG_URL or "")
    name = f"crm_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_test_app(database_url: str, tmp: Path, **extra: Any) -> Flask:
    options: dict[str, Any] = {}
    if database_url.startswith("sqlite"):
        # Tests hand one connection to the worker thread too.
        options = {"connect_args": {"check_same_thread": False, "timeout": 15}}
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        "SQLALCHEMY_ENGINE_OPTIONS": options or {"pool_pre_ping": True},
        "SECRET_KEY": "test-secret",
        "WTF_CSRF_ENABLED": False,
        "CRM_UPLOAD_DIR": str(tmp / "uploads"),
        "CRM_OUTBOX_DIR": str(tmp / "outbox"),
        "CRM_MAX_UPLOAD_BYTES": 1024 * 1024,
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
        "CRM_EMBEDDED_WORKERS": False,
        # Counts would carry over between tests of the one session app; the tests of
        # rate limits switch it on for themselves.
        "RATELIMIT_ENABLED": False,
    }
    config.update(extra)
    return create_app(config)


@pytest.fixture(scope="session")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    os.environ.setdefault("CRM_INSTANCE_PATH", str(tmp_path_factory.mktemp("instance")))
    application = make_test_app(database_url, tmp_path_factory.mktemp("files"))
    with application.app_context():
        upgrade()
        db.engine.dispose()
    yield application
    with application.app_context():
        db.engine.dispose()  # close pooled connections before the database is dropped


@pytest.fixture(autouse=True)
def _transaction(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run the test inside one outer transaction and roll it back afterwards.

    No app context stays pushed during the test: each request (and each
    `with app.app_context()` in a test) gets its own context, `g` and session, as in
    production; they all share the one connection that holds the outer transaction.
    """
    if "app" not in request.fixturenames:
        yield
        return
    app: Flask = request.getfixturevalue("app")
    # Workers run actors in the last app created (crm.queue.init_app); a test that made
    # an app of its own must not leave later tests' actors running in it.
    queue._state["app"] = app
    with app.app_context():
        connection = db.engine.connect()
    outer = connection.begin()
    original = db.session
    db.session = scoped_session(
        sessionmaker(bind=connection, join_transaction_mode="create_savepoint"),
        scopefunc=_app_ctx_id,
    )
    try:
        yield
    finally:
        db.session = original
        outer.rollback()
        connection.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def ctx(app: Flask) -> Iterator[None]:
    """An app context (with a request) for calling services directly."""
    with app.test_request_context():
        yield


def make_user(email: str = "admin@example.com", role: str = "admin", name: str = "Ada Admin"):  # type: ignore[no-untyped-def]
    from crm.auth.services import create_user

    user = create_user(email, TEST_PASSWORD, role, full_name=name)
    db.session.commit()
    return user


def login(client: FlaskClient, email: str) -> None:
    response = client.post("/login", data={"email": email, "password": TEST_PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)


@pytest.fixture
def admin(app: Flask):  # type: ignore[no-untyped-def]
    with app.app_context():
        return make_user()


@pytest.fixture
def admin_client(client: FlaskClient, admin) -> FlaskClient:  # type: ignore[no-untyped-def]
    login(client, "admin@example.com")
    return client


def make_client(**values: Any):  # type: ignore[no-untyped-def]
    """A client row straight through the model (not the form)."""
    from crm.clients.models import Client

    values.setdefault("first_name", "Zofia")
    values.setdefault("last_name", "Wiśniewska")
    values.setdefault("custom", {})
    client = Client(**values)
    client.refresh_search_text()
    db.session.add(client)
    db.session.commit()
    return client


def make_field(label: str, field_type: str, **kw: Any):  # type: ignore[no-untyped-def]
    from crm.fields.models import FieldType
    from crm.fields.services import FieldSpec, create_field

    field = create_field(
        FieldSpec(
            label=label, field_type=FieldType(field_type), choices=kw.pop("choices", []), **kw
        )
    )
    db.session.commit()
    return field
