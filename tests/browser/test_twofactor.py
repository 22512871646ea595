"""In headless Chromium: enrol 2FA, sign out, sign in with a code, then sit idle until
the lock screen comes (a timeout shortened for the test) and unlock back to the page.

Codes come from oathtool, not from the app's own TOTP library."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import LiveServer, login
from tests.conftest import TEST_PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
EMAIL = "zweifaktor@example.com"


def oathtool_code(secret: str, at: float) -> str:
    tool = shutil.which("oathtool")
    if tool is None:
        pytest.skip("oathtool is not installed (Debian: apt-get install oathtool)")
    result = subprocess.run(  # noqa: S603 (fixed program, arguments from the test)
        [tool, "--totp", "-b", secret, "-N", f"@{int(at)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_enrol_sign_in_with_a_code_and_idle_lock(page: Page, live_server: LiveServer):
    from playwright.sync_api import expect

    live_server.add_user(EMAIL, role="sales")
    login(page, EMAIL)

    # Enrol: read the key off the page, confirm one code.
    page.get_by_role("link", name="Security").click()
    page.get_by_role("button", name="Set up two-factor authentication").click()
    secret = page.locator("#totp-secret").get_attribute("data-secret")
    assert secret
    enrolled_at = time.time()
    page.get_by_label("Code").fill(oathtool_code(secret, enrolled_at))
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    codes = page.locator(".recovery-codes li, .recovery-codes code")
    expect(codes.first).to_be_visible()
    page.get_by_role("button", name="I have stored them, continue").click()

    # Sign out; signing in now asks for a code after the password.
    page.get_by_role("button", name="Sign out").click()
    page.goto("/login")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/login/2fa"))
    # The enrolment used this time step's code, which cannot be replayed: the next
    # step's code is within the accepted drift.
    page.get_by_label("Code").fill(oathtool_code(secret, enrolled_at + 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(lambda url: "/login" not in url)

    # Idle: with the timeout shortened, the page's timer shows the lock screen.
    original = live_server.app.config["CRM_IDLE_TIMEOUT_SECONDS"]
    live_server.app.config["CRM_IDLE_TIMEOUT_SECONDS"] = 2
    try:
        page.goto("/clients/")
        page.wait_for_url(re.compile(r"/lock"), timeout=15_000)
        expect(page.get_by_label("Password")).to_be_focused()
        page.get_by_label("Password").fill(TEST_PASSWORD)
        page.get_by_role("button", name="Unlock").click()
        page.wait_for_url(re.compile(r"/clients/?$"))
    finally:
        live_server.app.config["CRM_IDLE_TIMEOUT_SECONDS"] = original
    expect(page.get_by_role("heading", name="Clients", exact=True)).to_be_visible()
