"""Export of one client's data, as an admin does it: open the card, press "Export data"
in its privacy section, watch the export wait for a worker and then move (the status
polls every second), download the zip and check what is in it.

The Dramatiq worker thread starts only after the click, so the test sees the export
pending first and then sees the polling page pick up the worker's progress.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Callable, Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import TYPE_CHECKING

import dramatiq
import jsonschema
import openpyxl
import pytest

import crm.queue
from tests.browser.conftest import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect

READY_TIMEOUT_MS = 20_000


@pytest.fixture
def start_worker(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[], None]]:
    """Starts a worker thread running the live server's actors (when called)."""
    app = live_server.app
    monkeypatch.setitem(app.config, "CRM_EXPORT_DIR", str(tmp_path / "exports"))
    monkeypatch.setitem(crm.queue._state, "app", app)
    broker = crm.queue.broker
    broker.flush_all()
    workers: list[dramatiq.Worker] = []

    def start() -> None:
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
        worker.start()
        workers.append(worker)

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()
        broker.flush_all()


def test_export_from_the_card(
    logged_in: Page, live_server: LiveServer, start_worker: Callable[[], None], tmp_path: Path
) -> None:
    from tests.privacy.export_data import FORMULA, make_demo_client

    page = logged_in
    tag = uuid.uuid4().hex[:6]
    demo = live_server.run(lambda: make_demo_client(tag))

    page.goto(f"/clients/{demo.client_id}")
    section = page.locator("#privacy")
    button = section.get_by_role("button", name="Export data")
    expect(button).to_be_visible()  # the lazily loaded privacy section
    button.click()

    status = section.locator(".export-status").first
    expect(status).to_contain_text("Waiting for a worker")
    expect(section.locator(".flash-success")).to_contain_text("Export started")

    start_worker()
    download_link = status.get_by_role("button", name="Download zip")
    expect(download_link).to_be_visible(timeout=READY_TIMEOUT_MS)
    expect(status).to_contain_text("KB")  # the size, once done
    expect(status.locator("progress")).to_have_count(0)  # polling stopped

    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert download.suggested_filename.endswith(".zip")
    assert "Müller-Dvořák" in download.suggested_filename
    saved = tmp_path / "export.zip"
    download.save_as(saved)

    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        folder = names[0].split("/", 1)[0]
        emls = [n for n in names if n.startswith(f"{folder}/emails/")]
        assert len(emls) == 3
        sent = {
            BytesParser(policy=policy.default).parsebytes(archive.read(n))["Message-ID"]
            for n in emls
        }
        assert sent == set(demo.messages)
        for filename, content in demo.files.items():
            assert archive.read(f"{folder}/attachments/{filename}") == content
        data = json.loads(archive.read(f"{folder}/data.json").decode("utf-8"))
        (tmp_path / "data.xlsx").write_bytes(archive.read(f"{folder}/data.xlsx"))

    from crm.privacy.export import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
    assert data["client"]["last_name"] == "Müller-Dvořák"
    assert data["client"]["company"] == FORMULA
    workbook = openpyxl.load_workbook(tmp_path / "data.xlsx")
    assert "Information" in workbook.sheetnames and "Emails" in workbook.sheetnames
    company = next(
        row[1] for row in workbook["Client"].iter_rows(min_row=2) if row[0].value == "Company"
    )
    assert company.value == FORMULA and company.data_type == "s"

    # The card lists the finished export with its download after a reload too.
    page.reload()
    expect(page.locator("#privacy").get_by_role("button", name="Download zip")).to_be_visible()
