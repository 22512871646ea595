"""Browser tests: headless Chromium (Debian's, never a downloaded one) driving the real
app served from a background thread on 127.0.0.1.

Unlike the rest of the suite these tests do not use the `app` fixture and its rolled-back
transaction: the server thread and the browser need rows that are really committed. One
temporary SQLite file serves the whole session, so each test uses names of its own.
CSRF protection is on, as it is for a person using the app.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import pytest
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import BaseWSGIServer, make_server

import crm.queue
from crm.extensions import db
from tests.conftest import TEST_PASSWORD, make_test_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_EMAIL = "admin@example.com"
VIEWPORT = {"width": 1280, "height": 800}
# Generous for a loaded CI machine, short enough that a hang fails fast.
TIMEOUT_MS = 10_000


@dataclass
class LiveServer:
    url: str
    app: Flask

    def add_user(self, email: str, role: str = "admin") -> None:
        """Another account, for a test that changes per-user preferences."""
        from crm.auth.services import create_user

        def add() -> None:
            create_user(email, TEST_PASSWORD, role, full_name=email.split("@")[0].title())
            db.session.commit()

        self.run(add)

    def run(self, func: Callable[[], Any]) -> Any:
        """Call `func` inside an app context (to seed or inspect rows directly)."""
        with self.app.app_context():
            return func()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    os.environ.setdefault("CRM_INSTANCE_PATH", str(tmp_path_factory.mktemp("instance")))
    tmp = tmp_path_factory.mktemp("browser")
    app = make_test_app(
        f"sqlite:///{tmp / 'browser.sqlite3'}",
        tmp,
        WTF_CSRF_ENABLED=True,
        # A failing view should answer with the app's own 500 page, as in production.
        PROPAGATE_EXCEPTIONS=False,
    )
    with app.app_context():
        from crm.auth.services import create_user

        upgrade()
        create_user(ADMIN_EMAIL, TEST_PASSWORD, "admin", full_name="Ada Admin")
        db.session.commit()

    # One line per request from werkzeug would drown the output of a failing test.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageProblems:
    """What went wrong in the page without failing an action: server errors, console
    errors (a CSP violation shows up here) and uncaught JavaScript exceptions."""

    seen: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Tolerate problems matching `pattern` (for a test that provokes them)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [p for p in self.seen if not any(a.search(p) for a in self.allowed)]


@pytest.fixture
def problems() -> PageProblems:
    found = PageProblems()
    return found


@pytest.fixture
def page(browser: Browser, live_server: LiveServer, problems: PageProblems) -> Iterator[Page]:
    """A fresh browser context (own cookies) per test, at 1280x800."""
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.on(
        "console",
        lambda m: (
            m.type == "error"
            and problems.seen.append(f"console: {m.text} ({m.location.get('url')})")
        ),
    )
    tab.on("pageerror", lambda e: problems.seen.append(f"javascript: {e}"))
    tab.on(
        "response",
        lambda r: r.status >= 500 and problems.seen.append(f"HTTP {r.status}: {r.url}"),
    )
    try:
        yield tab
    finally:
        context.close()
    assert not problems.unexpected(), problems.unexpected()


def login(page: Page, email: str = ADMIN_EMAIL, password: str = TEST_PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def htmx_settled(page: Page) -> None:
    """Wait until htmx has no request in flight and has set up what it swapped in: a
    swapped-in element gets its listeners only when it settles, so a click or key
    in that instant (a fast or loaded machine) would go unheard."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling,"
        " .htmx-added')"
    )


@pytest.fixture
def logged_in(page: Page) -> Page:
    login(page)
    return page


@pytest.fixture
def worker(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Dramatiq worker running the actors inside the live server's app, mail to the
    outbox, no rate limit. Yields the outbox directory."""
    app = live_server.app
    monkeypatch.setitem(app.config, "CRM_SMTP_URL", "")
    monkeypatch.setitem(app.config, "CRM_MAIL_RATE", 0)
    monkeypatch.setitem(crm.queue._state, "app", app)
    broker = crm.queue.broker
    broker.flush_all()  # nothing queued by earlier tests runs here
    running = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    running.start()
    try:
        yield Path(app.config["CRM_OUTBOX_DIR"])
    finally:
        running.stop()
        broker.flush_all()


def watch(page: Page, problems: PageProblems) -> Page:
    """The same problem reporting as the `page` fixture, for a page of another context."""
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and problems.seen.append(f"console: {m.text} ({m.location.get('url')})")
        ),
    )
    page.on("pageerror", lambda e: problems.seen.append(f"javascript: {e}"))
    page.on(
        "response",
        lambda r: r.status >= 500 and problems.seen.append(f"HTTP {r.status}: {r.url}"),
    )
    return page


def outbox_messages(outbox: Path, tag: str) -> list[EmailMessage]:
    """The messages in the outbox addressed to this run's clients."""
    found = []
    for path in sorted(outbox.glob("*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if any(tag in address for _name, address in getaddresses([str(message["To"])])):
            found.append(message)
    return found


def on_live_server(url: str, live_server: LiveServer) -> str:
    """The link as sent (on CRM_BASE_URL), pointed at the live server instead."""
    parts, live = urlsplit(url), urlsplit(live_server.url)
    return urlunsplit((live.scheme, live.netloc, parts.path, parts.query, parts.fragment))
