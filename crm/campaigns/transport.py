"""Sending campaign messages: one SMTP connection per batch, answers classified, and a
rate limit shared by every worker process.

- `SMTPTransport` keeps one connection open across the messages of a batch and opens a
  new one when the server hangs up (a 421, an idle timeout, a restart).
- Every answer becomes a `SendResult`: sent; temporary (4xx, connection trouble), to
  be retried later; permanent (5xx). Only a 5xx refusal of the recipient is a bounce
  that suppresses the address; a 5xx for the sender or the content fails the message
  without blaming the recipient.
- `OutboxTransport` is the embedded default (no CRM_SMTP_URL): files in the outbox.
- `RateLimiter` paces sending to CRM_MAIL_RATE messages per second across all workers:
  each worker reserves a few slots at a time on one shared schedule (Redis when the
  broker is Redis, else a row in the database), then sends them at the rate.
"""

from __future__ import annotations

import contextlib
import enum
import re
import smtplib
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa


class Outcome(enum.StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    answer: str
    # True only when the server refused the recipient itself (5xx at RCPT): the address
    # is then suppressed, so it is never mailed again.
    bounce: bool = False


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()[:500]


def classify(code: int, text: bytes | str, *, at_recipient: bool = False) -> SendResult:
    if 200 <= code < 300:
        return SendResult(Outcome.SENT, _answer(code, text))
    if code >= 500:
        return SendResult(Outcome.PERMANENT, _answer(code, text), bounce=at_recipient)
    return SendResult(Outcome.TEMPORARY, _answer(code, text))


class Transport(Protocol):
    def send(self, sender: str, recipient: str, data: bytes) -> SendResult: ...

    def close(self) -> None: ...


class SMTPTransport:
    """One SMTP session reused for many messages; reconnects when it was dropped."""

    def __init__(self, url: str, *, timeout: float = 30, local_hostname: str = "localhost"):
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"}:
            raise ValueError(f"CRM_SMTP_URL must be smtp:// or smtps://, got {url!r}")
        self._tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._tls else 25)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "")
        self._timeout = timeout
        # A fixed EHLO name: smtplib's default asks DNS for our FQDN on every connect.
        self._local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self.connections = 0  # how many times a connection was opened (tests, bench)

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self._tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self._host,
                self._port,
                local_hostname=self._local_hostname,
                timeout=self._timeout,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                self._host, self._port, local_hostname=self._local_hostname, timeout=self._timeout
            )
        try:
            # Small writes (pipelined commands, then the message) must not wait for
            # the previous segment's ACK (Nagle's algorithm).
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if not self._tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            if self._user:
                smtp.login(self._user, self._password)
        except BaseException:
            smtp.close()
            raise
        self.connections += 1
        return smtp

    def send(self, sender: str, recipient: str, data: bytes) -> SendResult:
        # A connection found dead is reopened once for the same message; a second
        # failure is a temporary result (retried later with backoff).
        for attempt in (1, 2):
            try:
                if self._smtp is None or self._smtp.sock is None:
                    self._smtp = self._connect()
                return self._transaction(self._smtp, sender, recipient, data)
            except smtplib.SMTPResponseException as exc:  # e.g. 421 or 554 at the greeting
                self.close()
                return classify(exc.smtp_code, exc.smtp_error)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:  # dropped, refused, TLS
                self.close()
                if attempt == 2:
                    return SendResult(Outcome.TEMPORARY, f"connection failed: {exc}"[:500])
        raise AssertionError("unreachable")

    @staticmethod
    def _transaction(smtp: smtplib.SMTP, sender: str, recipient: str, data: bytes) -> SendResult:
        if smtp.has_extn("pipelining") and sender.isascii() and recipient.isascii():
            return _pipelined(smtp, sender, recipient, data)
        try:
            smtp.sendmail(sender, [recipient], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return classify(code, text, at_recipient=True)
        except smtplib.SMTPSenderRefused as exc:
            return classify(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPDataError as exc:
            return classify(exc.smtp_code, exc.smtp_error)
        # smtplib keeps the DATA answer to itself; the transaction succeeded.
        return SendResult(Outcome.SENT, "250 accepted")

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _pipelined(smtp: smtplib.SMTP, sender: str, recipient: str, data: bytes) -> SendResult:
    """One transaction in two round trips (RFC 2920): MAIL, RCPT and DATA in one write,
    their three answers, then the message and its answer. smtplib waits for each
    answer in turn (four round trips), which is most of the time a message takes."""
    smtp.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
    mail_code, mail_text = smtp.getreply()
    rcpt_code, rcpt_text = smtp.getreply()
    data_code, data_text = smtp.getreply()
    if mail_code != 250 or rcpt_code not in (250, 251) or data_code != 354:
        if data_code == 354:  # the server waits for a message: give it an empty one
            smtp.send(b".\r\n")
            smtp.getreply()
        _reset(smtp)
        if mail_code != 250:
            return classify(mail_code, mail_text)
        if rcpt_code not in (250, 251):
            return classify(rcpt_code, rcpt_text, at_recipient=True)
        return classify(data_code, data_text)
    body = _LEADING_DOT.sub(b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    smtp.send(body + b".\r\n")
    code, text = smtp.getreply()
    if code == 421:
        smtp.close()
    return classify(code, text)


def _reset(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


class OutboxTransport:
    """The embedded default: each message becomes a file in the outbox directory."""

    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)

    def send(self, sender: str, recipient: str, data: bytes) -> SendResult:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self._dir / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a message
        return SendResult(Outcome.SENT, "250 written to the outbox")

    def close(self) -> None:
        pass


def open_transport(config: Any) -> Transport:
    url = config.get("CRM_SMTP_URL")
    if not url:
        return OutboxTransport(config["CRM_OUTBOX_DIR"])
    host = urlsplit(config.get("CRM_BASE_URL") or "").hostname or "localhost"
    return SMTPTransport(url, local_hostname=host)


# --- the global rate limit ---------------------------------------------------------------


class SlotStore(Protocol):
    def reserve(self, duration: float) -> float:
        """Move the shared schedule on by `duration` seconds; return how long the caller
        must wait before its reserved stretch begins."""
        ...


_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if nxt < now then nxt = now end
local until_ = nxt + tonumber(ARGV[1])
local keep = math.ceil((until_ - now) * 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.6f', until_), 'PX', keep)
return string.format('%.6f', nxt - now)
"""


class RedisSlotStore:
    """The schedule as one Redis key, moved by a script (atomic, Redis's own clock, so
    workers on hosts whose clocks differ still agree)."""

    def __init__(self, url: str, key: str = "crm:mail-rate") -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._script = self._client.register_script(_RESERVE_LUA)
        self._key = key

    def reserve(self, duration: float) -> float:
        return float(self._script(keys=[self._key], args=[f"{duration:.6f}"]))


class DatabaseSlotStore:
    """The schedule as one row of `mail_rate_limits`, moved by one conditional UPDATE in
    a short transaction of its own (the caller holds no other writes while sending)."""

    def __init__(self, session: Any, name: str = "campaigns") -> None:
        self._session = session
        self._name = name

    def reserve(self, duration: float) -> float:
        from crm.campaigns.models import MailRateLimit

        now = time.time()
        table = MailRateLimit.__table__
        start = sa.case((table.c.next_at < now, now), else_=table.c.next_at)
        stmt = (
            sa.update(table)
            .where(table.c.name == self._name)
            .values(next_at=start + duration)
            .returning(table.c.next_at)
        )
        until = self._session.execute(stmt).scalar()
        if until is None:  # first use: the row appears, and this caller starts at once
            self._session.execute(sa.insert(table).values(name=self._name, next_at=now + duration))
            until = now + duration
        self._session.commit()
        return max(0.0, float(until) - duration - now)


class RateLimiter:
    """Call `wait()` before each message: at most `rate` messages per second over all
    workers sharing the store. Slots are reserved in small chunks (a tenth of a
    second's worth) so the shared store is touched ~10 times a second per worker, not
    once per message; a chunk left unused when a batch ends is simply forgone."""

    def __init__(self, rate: float, store: SlotStore, *, sleep: Any = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.chunk = max(1, min(100, int(rate / 10)))
        self._store = store
        self._sleep = sleep
        self._left = 0
        self._next = 0.0

    def wait(self) -> None:
        if self._left == 0:
            delay = self._store.reserve(self.chunk / self.rate)
            self._next = time.monotonic() + delay
            self._left = self.chunk
        pause = self._next - time.monotonic()
        if pause > 0:
            self._sleep(pause)
        self._next += 1 / self.rate
        self._left -= 1


def make_rate_limiter(config: Any, session: Any) -> RateLimiter | None:
    """The limiter CRM_MAIL_RATE asks for (None: unlimited)."""
    rate = float(config.get("CRM_MAIL_RATE") or 0)
    if rate <= 0:
        return None
    broker_url = config.get("CRM_BROKER_URL") or ""
    store: SlotStore
    if broker_url.startswith(("redis://", "rediss://")):
        store = RedisSlotStore(broker_url)
    else:
        store = DatabaseSlotStore(session)
    return RateLimiter(rate, store)
