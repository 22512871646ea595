"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 at a free port.

It keeps every accepted message and can misbehave on purpose: fail a share of
transactions with 451 (temporary) at DATA, or refuse given recipients with 550
(permanent) at RCPT. Thread-safe: worker threads and subprocesses send to it while the
test reads what arrived.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        message = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class RecordingHandler:
    fail_share: float = 0.0
    reject: set[str] = field(default_factory=set)
    seed: int = 1234
    pipelining: bool = True
    messages: list[Received] = field(default_factory=list)
    temporary_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # aiosmtpd reads commands one line at a time, so pipelined commands work; say so,
        # and clients take the pipelined path (set `pipelining = False` for the other).
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.reject:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self.fail_share and self._random.random() < self.fail_share:
                self.temporary_failures += 1
                return "451 4.3.0 Temporary failure, try again"
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 2.0.0 Accepted"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def recipients(self) -> list[str]:
        return [rcpt for message in self.snapshot() for rcpt in message.rcpt_tos]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.temporary_failures = 0


class SMTPTestServer:
    """Start with `start()`, point CRM_SMTP_URL at `url`, `stop()` at the end."""

    def __init__(self, fail_share: float = 0.0, reject: set[str] | None = None) -> None:
        self.handler = RecordingHandler(
            fail_share=fail_share, reject={r.lower() for r in reject or set()}
        )
        self.port = free_port()
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, decode_data=False
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SMTPTestServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    # Shortcuts for tests.
    @property
    def messages(self) -> list[Received]:
        return self.handler.snapshot()

    def recipients(self) -> list[str]:
        return self.handler.recipients()
