"""The SMTP transport (reused connection, reconnect, answers) and the shared rate
limit."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from crm.campaigns.transport import (
    DatabaseSlotStore,
    Outcome,
    RateLimiter,
    RedisSlotStore,
    SMTPTransport,
    classify,
)
from crm.extensions import db
from tests.campaigns.smtp_server import free_port

MESSAGE = (
    b"Subject: =?utf-8?q?=C5=81=C3=B3d=C5=BA?=\r\nTo: a@example.pl\r\n\r\nTre\xc5\x9b\xc4\x87\r\n"
)


def test_answers_are_classified():
    assert classify(250, b"ok").outcome is Outcome.SENT
    assert classify(451, b"later").outcome is Outcome.TEMPORARY
    refused = classify(550, b"no such user", at_recipient=True)
    assert (refused.outcome, refused.bounce) == (Outcome.PERMANENT, True)
    assert classify(554, b"content refused").bounce is False


def test_one_connection_serves_many_messages_and_comes_back_when_dropped(smtp):
    transport = SMTPTransport(smtp.url)
    try:
        for _i in range(3):
            assert transport.send("s@example.pl", "a@example.pl", MESSAGE).outcome is Outcome.SENT
        assert transport.connections == 1
        transport._smtp.sock.shutdown(socket.SHUT_RDWR)  # the connection was dropped
        assert transport.send("s@example.pl", "b@example.pl", MESSAGE).outcome is Outcome.SENT
        assert transport.connections == 2
    finally:
        transport.close()
    assert smtp.recipients() == ["a@example.pl"] * 3 + ["b@example.pl"]
    assert smtp.messages[0].data.startswith(b"Subject: =?utf-8?q?=C5=81")


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusals_and_temporary_failures(smtp, pipelining):
    smtp.handler.pipelining = pipelining
    smtp.handler.reject = {"gone@example.pl"}
    transport = SMTPTransport(smtp.url)
    try:
        refused = transport.send("s@example.pl", "gone@example.pl", MESSAGE)
        assert transport._smtp.has_extn("pipelining") is pipelining
        assert (refused.outcome, refused.bounce) == (Outcome.PERMANENT, True)
        assert refused.answer.startswith("550")
        smtp.handler.fail_share = 1.0
        later = transport.send("s@example.pl", "a@example.pl", MESSAGE)
        assert (later.outcome, later.answer[:3]) == (Outcome.TEMPORARY, "451")
        smtp.handler.fail_share = 0.0
        # The same connection goes on after both (smtplib sent RSET).
        assert transport.send("s@example.pl", "a@example.pl", MESSAGE).outcome is Outcome.SENT
        assert transport.connections == 1
    finally:
        transport.close()


def test_announcing_the_next_envelope_keeps_every_answer_with_its_message(smtp):
    """One round trip a message: each message's content goes with the next envelope;
    a refusal of an announced recipient, a temporary failure and a different message
    than the one announced each get the right answer, and nothing extra arrives."""
    smtp.handler.reject = {"gone@example.pl"}
    sender = "s@example.pl"
    transport = SMTPTransport(smtp.url)
    try:
        first = transport.send(sender, "a@example.pl", MESSAGE, then=(sender, "gone@example.pl"))
        assert first.outcome is Outcome.SENT
        refused = transport.send(sender, "gone@example.pl", MESSAGE, then=(sender, "b@example.pl"))
        assert (refused.outcome, refused.bounce) == (Outcome.PERMANENT, True)
        # After a refusal nothing is open: the next message takes the ordinary path.
        smtp.handler.fail_share = 1.0
        failed = transport.send(sender, "b@example.pl", MESSAGE, then=(sender, "c@example.pl"))
        assert (failed.outcome, failed.answer[:3]) == (Outcome.TEMPORARY, "451")
        smtp.handler.fail_share = 0.0
        assert transport.send(sender, "c@example.pl", MESSAGE).outcome is Outcome.SENT
        assert transport.connections == 1
        # Announced d@, but e@ is sent instead (a batch cut short): d@ gets nothing.
        sent = transport.send(sender, "x@example.pl", MESSAGE, then=(sender, "d@example.pl"))
        assert sent.outcome is Outcome.SENT
        assert transport.send(sender, "e@example.pl", MESSAGE).outcome is Outcome.SENT
        assert transport.connections == 2  # the open envelope was abandoned by hanging up
        # Closing with an envelope open delivers nothing either.
        sent = transport.send(sender, "f@example.pl", MESSAGE, then=(sender, "g@example.pl"))
        assert sent.outcome is Outcome.SENT
    finally:
        transport.close()
    deadline = time.monotonic() + 5
    expected = ["a@example.pl", "c@example.pl", "x@example.pl", "e@example.pl", "f@example.pl"]
    while smtp.recipients() != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smtp.recipients() == expected
    assert all(m.data == MESSAGE for m in smtp.messages)


def test_messages_starting_lines_with_a_dot_are_stuffed(smtp):
    transport = SMTPTransport(smtp.url)
    data = b"Subject: dots\r\n\r\n.first\r\nmiddle\r\n..second\r\n"
    try:
        assert transport.send("s@example.pl", "a@example.pl", data).outcome is Outcome.SENT
    finally:
        transport.close()
    assert smtp.messages[0].data == data


def test_no_server_is_a_temporary_failure():
    transport = SMTPTransport(f"smtp://127.0.0.1:{free_port()}", timeout=2)
    result = transport.send("s@example.pl", "a@example.pl", MESSAGE)
    assert result.outcome is Outcome.TEMPORARY


class MemoryStore:
    def __init__(self) -> None:
        self.next_at = 0.0
        self.lock = threading.Lock()

    def reserve(self, duration: float) -> float:
        with self.lock:
            now = time.time()
            start = max(self.next_at, now)
            self.next_at = start + duration
            return start - now


def test_limiters_sharing_a_store_keep_the_rate_together():
    store = MemoryStore()
    limiters = [RateLimiter(200, store), RateLimiter(200, store)]
    started = time.monotonic()

    def run(limiter: RateLimiter) -> None:
        for _i in range(40):
            limiter.wait()

    threads = [threading.Thread(target=run, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 80 messages at 200/s together: at least ~0.4 s (the first chunk goes at once).
    assert time.monotonic() - started >= 0.3


def test_the_database_store_moves_one_shared_schedule(app):
    with app.app_context():
        store = DatabaseSlotStore(db.session)
        first = store.reserve(0.5)
        second = store.reserve(0.5)
        assert first == pytest.approx(0, abs=0.05)
        assert second == pytest.approx(0.5, abs=0.1)


@pytest.mark.skipif(
    not os.environ.get("CRM_TEST_REDIS_URL"), reason="CRM_TEST_REDIS_URL is not set"
)
def test_the_redis_store_moves_one_shared_schedule():
    store = RedisSlotStore(os.environ["CRM_TEST_REDIS_URL"], key=f"crm:test:{uuid.uuid4().hex}")
    other = RedisSlotStore(os.environ["CRM_TEST_REDIS_URL"], key=store._key)
    assert store.reserve(0.5) == pytest.approx(0, abs=0.05)
    assert other.reserve(0.5) == pytest.approx(0.5, abs=0.1)
    store._client.delete(store._key)
