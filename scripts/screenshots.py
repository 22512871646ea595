"""Screenshots of the main pages, at desktop and phone size, for a visual review.

    .venv/bin/python scripts/screenshots.py --out screenshots/

Starts the app on a throwaway SQLite database filled with demo data, signs in as an
admin with headless Chromium (Debian's /usr/bin/chromium, no downloaded browser) and
saves one PNG per page and viewport. It also reports pages whose content is wider than
the phone screen (the whole page scrolls sideways), which a screenshot does not show.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from playwright.sync_api import Page

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
ADMIN_PASSWORD = "screenshots only, not a real password"  # noqa: S105
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 1,
    },
}


def build_app(tmp: Path, clients: int) -> Flask:
    os.environ["CRM_INSTANCE_PATH"] = str(tmp / "instance")
    from flask_migrate import upgrade

    from crm import create_app
    from crm.auth.services import create_user
    from crm.demo import fill_demo
    from crm.extensions import db

    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'screens.sqlite3'}",
            "SQLALCHEMY_ENGINE_OPTIONS": {
                "connect_args": {"check_same_thread": False, "timeout": 15}
            },
            "SECRET_KEY": "screenshots",
            "CRM_UPLOAD_DIR": str(tmp / "uploads"),
            "CRM_OUTBOX_DIR": str(tmp / "outbox"),
            "CRM_EMBEDDED_WORKERS": False,
        }
    )
    with app.app_context():
        upgrade()
        create_user(ADMIN_EMAIL, ADMIN_PASSWORD, "admin", full_name="Ada Admin")
        db.session.commit()
        stats = fill_demo(clients)
        print("demo data:", ", ".join(f"{v} {k}" for k, v in stats.items()))
    return app


def busy_client_id(app: Flask) -> int:
    """A client with notes, open tasks and deals, so the card shows every section."""
    from sqlalchemy import func, select

    from crm.deals.models import Deal
    from crm.extensions import db
    from crm.notes.models import Note
    from crm.tasks.models import Task

    with app.app_context():
        notes = func.count(Note.id.distinct())
        stmt = (
            select(Note.client_id)
            .join(Task, Task.client_id == Note.client_id)
            .join(Deal, Deal.client_id == Note.client_id)
            .group_by(Note.client_id)
            .order_by(notes.desc(), Note.client_id)
            .limit(1)
        )
        found = db.session.scalar(stmt)
        if found is None:
            found = db.session.scalar(select(Note.client_id).limit(1))
        if found is None:
            raise SystemExit("the demo data has no client with notes")
        return int(found)


def mailing_pages(app: Flask) -> dict[str, str]:
    """A demo list and the public unsubscribe page of one of its confirmed subscribers
    (the path only: the screenshots' server has its own address)."""
    from urllib.parse import urlsplit

    from sqlalchemy import select

    from crm.extensions import db
    from crm.mailing.models import Subscription
    from crm.mailing.services import unsubscribe_url

    with app.test_request_context():
        sub = db.session.scalars(
            select(Subscription).where(Subscription.status == "confirmed").limit(1)
        ).first()
        if sub is None:
            raise SystemExit("the demo data has no confirmed subscription")
        link = urlsplit(unsubscribe_url(sub.client_id, sub.list_id))
        return {"list": f"/admin/lists/{sub.list_id}/subscribers", "unsubscribe": link.path}


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# The outermost elements sticking out past the right edge of the screen: the cause of a
# page that scrolls sideways (content inside a scrolling wrapper does not count).
OVERFLOW_JS = """() => {
  const screen = document.documentElement.clientWidth;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + [...el.classList].map((c) => "." + c).join("");
  const out = (el) => el.getBoundingClientRect().right > screen + 1;
  const scrolls = (el) => ["auto", "scroll", "hidden"].includes(getComputedStyle(el).overflowX);
  const culprits = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (!out(el)) continue;
    let up = el.parentElement, hidden = false, outer = true;
    for (; up && up !== document.body; up = up.parentElement) {
      if (scrolls(up)) { hidden = true; break; }
      if (out(up)) { outer = false; }
    }
    const right = Math.round(el.getBoundingClientRect().right);
    if (!hidden && outer) culprits.push(name(el) + " (" + right + "px)");
  }
  return {page: document.documentElement.scrollWidth, screen, culprits: culprits.slice(0, 5)};
}"""


class Shooter:
    def __init__(self, page: Page, out: Path, prefix: str) -> None:
        self.page = page
        self.out = out
        self.prefix = prefix
        self.count = 0
        self.saved: list[Path] = []
        self.overflowing: list[str] = []
        self.failures: list[str] = []
        page.on(
            "response",
            lambda r: r.status >= 500 and self.failures.append(f"HTTP {r.status} {r.url}"),
        )

    def shoot(self, name: str, full_page: bool = True) -> None:
        self.count += 1
        self.page.wait_for_load_state("networkidle")
        path = self.out / f"{self.prefix}-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.saved.append(path)
        wide = self.page.evaluate(OVERFLOW_JS)
        if wide["page"] > wide["screen"]:
            self.overflowing.append(
                f"{path.name}: page is {wide['page']}px wide on a {wide['screen']}px screen;"
                f" widest: {', '.join(wide['culprits']) or '?'}"
            )


def take_all(page: Page, shooter: Shooter, client_id: int, mailing: dict[str, str]) -> None:
    shot = shooter.shoot
    page.goto("/login")
    shot("login", full_page=False)
    page.get_by_label("Password").fill("wrong")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_role("button", name="Sign in").click()
    shot("login-error", full_page=False)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)

    page.goto("/clients/")
    shot("client-list")
    page.get_by_text("Columns", exact=True).click()
    shot("client-list-columns", full_page=False)
    page.goto("/clients/?q=zzzz-nobody")
    shot("client-list-no-match", full_page=False)

    page.goto(f"/clients/{client_id}")
    shot("client-card")
    page.locator("div.editable#grp-address").click()
    page.locator("form.inline-edit#grp-address").wait_for()
    shot("client-card-inline-edit", full_page=False)
    page.locator("form.inline-edit#grp-address").get_by_role("button", name="Cancel").click()
    page.locator("div.editable#grp-address").wait_for()
    page.locator("div.editable#grp-email").click()
    email = page.locator("form.inline-edit#grp-email")
    email.get_by_label("Email", exact=True).fill("not an email")
    email.get_by_role("button", name="Save").click()
    email.locator(".field-error").wait_for()
    shot("client-card-inline-error", full_page=False)

    page.goto("/admin/fields/")
    shot("custom-fields")
    page.goto("/admin/fields/new")
    shot("custom-field-new")

    page.goto("/clients/new")
    page.get_by_label("First name").fill("Łucja")
    page.get_by_label("Email", exact=True).fill("not-an-email")
    page.get_by_role("button", name="Create client").click()
    page.locator(".flash-error").wait_for()
    shot("client-new-errors")

    page.goto("/tasks/")
    shot("my-tasks")
    page.goto("/deals/")
    shot("deals")
    page.goto("/clients/99999999")
    shot("not-found", full_page=False)
    page.goto("/admin/audit/")
    shot("audit-log")
    page.goto("/admin/network/")
    shot("network-access")
    page.goto('/clients/?q="Contract" < 1 AND city = "Łódź"')
    shot("client-list-query")
    page.goto("/clients/?q=city = AND")
    shot("client-list-query-error", full_page=False)
    page.goto("/admin/users/")
    shot("users")
    page.goto("/admin/users/invite")
    shot("user-invite")
    page.goto("/admin/roles/")
    shot("roles")
    page.get_by_role("link", name="sales").first.click()
    shot("role-edit")
    page.goto("/account")
    shot("my-account")
    page.goto("/account/2fa")
    shot("two-factor")
    page.goto("/account/2fa/setup")
    shot("two-factor-setup")
    page.goto("/admin/lists/")
    shot("mailing-lists")
    page.goto("/admin/lists/new")
    shot("mailing-list-new")
    page.goto(mailing["list"])
    shot("mailing-list-subscribers")
    page.goto("/admin/lists/import")
    shot("mailing-import")
    page.goto("/campaigns/")
    shot("campaigns")
    page.goto("/campaigns/new")
    shot("campaign-new")
    # The recipient's page: no session needed, but one does no harm here.
    page.goto(mailing["unsubscribe"])
    shot("unsubscribe-page")
    page.goto("/")
    shot("dashboard")
    page.goto(f"/privacy/requests/new?client_id={client_id}")
    shot("request-new")
    page.get_by_label("What is asked").select_option("access")
    page.get_by_role("button", name="Register request").click()
    page.locator("h1").wait_for()
    shot("request")
    page.goto("/privacy/requests")
    shot("requests")
    page.goto(f"/clients/{client_id}/erase")
    shot("erase-confirm", full_page=False)
    page.goto(f"/clients/{client_id}/restriction")
    shot("restrict", full_page=False)
    page.goto("/appointments/?view=week")
    shot("calendar-week")
    page.goto("/appointments/")
    shot("calendar-day")
    page.goto("/appointments/services/")
    shot("appointment-services")
    page.goto("/appointments/services/new")
    shot("appointment-service-new")
    page.goto("/appointments/hours")
    shot("working-hours")
    page.goto("/admin/organisation/")
    shot("organisation")
    # Public pages, as a customer sees them (the session does not change them).
    page.goto("/privacy")
    shot("privacy-notice")
    page.goto("/book")
    shot("book-services")
    page.locator(".booking-services a[role=button]").first.click()
    page.locator("h1").wait_for()
    shot("book-slots")
    times = page.locator(".booking-times a")
    if times.count() == 0:
        page.locator("a[rel=next]").first.click()
    page.locator(".booking-times a").first.click()
    page.locator("form.booking-form").wait_for()
    shot("book-details")


def run(out: Path, clients: int, chromium: str) -> int:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crm-screens-") as tmp_name:
        app = build_app(Path(tmp_name), clients)
        client_id = busy_client_id(app)
        mailing = mailing_pages(app)
        saved: list[Path] = []
        overflowing: list[str] = []
        failures: list[str] = []
        with serving(app) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                for name, options in VIEWPORTS.items():
                    context = browser.new_context(base_url=url, **options)
                    context.set_default_timeout(15_000)
                    page = context.new_page()
                    shooter = Shooter(page, out, name)
                    take_all(page, shooter, client_id, mailing)
                    context.close()
                    saved += shooter.saved
                    overflowing += shooter.overflowing
                    failures += [f"{name}: {f}" for f in shooter.failures]
            finally:
                browser.close()
        with app.app_context():
            from crm.extensions import db

            db.engine.dispose()
    for path in saved:
        print(path)
    for problem in overflowing:
        print("HORIZONTAL OVERFLOW:", problem, file=sys.stderr)
    for failure in failures:
        print("SERVER ERROR:", failure, file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--clients", type=int, default=300, help="demo clients to create")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        parser.error(f"no Chromium at {args.chromium} (apt-get install chromium)")
    return run(args.out, args.clients, args.chromium)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
