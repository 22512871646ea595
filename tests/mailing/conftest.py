"""Fixtures for the mailing list tests."""

from __future__ import annotations

import pytest
from dramatiq.brokers.stub import StubBroker

from crm.queue import broker


@pytest.fixture
def stub_queue():  # type: ignore[no-untyped-def]
    if not isinstance(broker, StubBroker):
        pytest.skip("inspects the in-memory broker (CRM_BROKER_URL is set)")
    broker.flush_all()
    yield broker.queues["default"]
    broker.flush_all()
