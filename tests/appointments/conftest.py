"""The browser fixtures (a live server and Chromium) for the appointment book's browser
test, shared with tests/browser."""

from tests.browser.conftest import browser, live_server, logged_in, page, problems  # noqa: F401
