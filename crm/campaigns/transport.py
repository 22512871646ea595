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


# An envelope (sender, recipient).
Envelope = tuple[str, str]


class Transport(Protocol):
    def send(
        self, sender: str, recipient: str, data: bytes, then: Envelope | None = None
    ) -> SendResult:
        """Send one message. `then` names the message the caller sends next, which a
        pipelining transport may announce early; a call for any other message is
        still correct (the announced one is abandoned)."""
        ...

    def close(self) -> None: ...


class SMTPTransport:
    """One SMTP session reused for many messages; reconnects when it was dropped.

    With PIPELINING a message costs one round trip: its content and end-of-data go in
    one write with the next message's MAIL, RCPT and DATA (RFC 2920 allows message
    content as the first "command" of a group), and the answers come back together.
    The next envelope is then open (the server waits for its content); if that message
    is not sent after all (a pause, a batch cut short), the session is closed without
    a final dot, which makes the server discard the empty transaction."""

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
        # The envelope announced ahead and the server's refusal of it (None: accepted,
        # the server now waits for that message's content).
        self._ahead: tuple[Envelope, SendResult | None] | None = None
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

    def send(
        self, sender: str, recipient: str, data: bytes, then: Envelope | None = None
    ) -> SendResult:
        # A connection found dead is reopened once for the same message; a second
        # failure is a temporary result (retried later with backoff).
        ahead, self._ahead = self._ahead, None
        for attempt in (1, 2):
            try:
                smtp = self._smtp if self._smtp is not None and self._smtp.sock else None
                if ahead is not None:
                    envelope, refusal = ahead
                    ahead = None
                    if smtp is not None and envelope == (sender, recipient):
                        return refusal if refusal is not None else self._finish(smtp, data, then)
                    if refusal is None:
                        self._hang_up()  # the server waits for content we will not send
                        smtp = None
                if smtp is None:
                    smtp = self._smtp = self._connect()
                return self._transaction(smtp, sender, recipient, data, then)
            except smtplib.SMTPResponseException as exc:  # e.g. 421 or 554 at the greeting
                self.close()
                return classify(exc.smtp_code, exc.smtp_error)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:  # dropped, refused, TLS
                self.close()
                if attempt == 2:
                    return SendResult(Outcome.TEMPORARY, f"connection failed: {exc}"[:500])
        raise AssertionError("unreachable")

    def _transaction(
        self, smtp: smtplib.SMTP, sender: str, recipient: str, data: bytes, then: Envelope | None
    ) -> SendResult:
        if smtp.has_extn("pipelining") and sender.isascii() and recipient.isascii():
            smtp.send(_envelope(sender, recipient))
            refusal = _envelope_answers(smtp)
            if refusal is not None:
                return refusal
            return self._finish(smtp, data, then)
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

    def _finish(self, smtp: smtplib.SMTP, data: bytes, then: Envelope | None) -> SendResult:
        """The content of a message whose DATA was accepted, and its answer; with
        `then`, the next envelope in the same write, and its answers kept for the
        next call."""
        # Dot-stuffing (RFC 5321 4.5.2); the search finds nothing in our own messages
        # (base64 and headers) and costs a fraction of the substitution.
        body = _LEADING_DOT.sub(b"..", data) if b"\n." in data or data[:1] == b"." else data
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        if then is not None and not (then[0].isascii() and then[1].isascii()):
            then = None
        if then is None:
            smtp.send(body + b".\r\n")
        else:
            smtp.send(body + b".\r\n" + _envelope(*then))
        code, text = smtp.getreply()
        result = classify(code, text)
        if code == 421:
            smtp.close()
            return result
        if then is not None:
            # This message's answer is in hand: trouble from here on concerns only the
            # next one (which will be sent again on a new connection), never this one.
            try:
                self._ahead = (then, _envelope_answers(smtp))
            except (smtplib.SMTPException, OSError):
                smtp.close()
        return result

    def _hang_up(self) -> None:
        """Close without QUIT: mid-DATA, a QUIT would be taken as message content."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def close(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[1] is None:
            self._hang_up()
            return
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


def _envelope(sender: str, recipient: str) -> bytes:
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii")


def _envelope_answers(smtp: smtplib.SMTP) -> SendResult | None:
    """The answers to a pipelined MAIL, RCPT and DATA (RFC 2920): None when the server
    now waits for the content, else the refusal (the session is reset for the next
    message). smtplib waits for each answer in turn, a round trip per command."""
    mail_code, mail_text = smtp.getreply()
    rcpt_code, rcpt_text = smtp.getreply()
    data_code, data_text = smtp.getreply()
    if mail_code == 250 and rcpt_code in (250, 251) and data_code == 354:
        return None
    if data_code == 354:  # the server waits for a message: give it an empty one
        smtp.send(b".\r\n")
        smtp.getreply()
    _reset(smtp)
    if mail_code != 250:
        return classify(mail_code, mail_text)
    if rcpt_code not in (250, 251):
        return classify(rcpt_code, rcpt_text, at_recipient=True)
    return classify(data_code, data_text)


def _reset(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


class OutboxTransport:
    """The embedded default: each message becomes a file in the outbox directory."""

    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)

    def send(
        self, sender: str, recipient: str, data: bytes, then: Envelope | None = None
    ) -> SendResult:
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
