"""Outgoing SMS: to files in instance/outbox/ (embedded default) or to an HTTP gateway.

`send_sms(SmsMessage(to, body, sender))` checks everything it can before any network
call (the number, the sender, the length), then hands the message to the backend the
settings name:

- no CRM_SMS_URL: one `<time>-<id>.sms.json` file per message in the outbox folder the
  email outbox uses, so a new installation shows what would have been sent;
- CRM_SMS_URL=https://...: one POST per message, its body rendered from
  CRM_SMS_BODY_TEMPLATE, with CRM_SMS_AUTH_HEADER added. A 5xx (or 408, 425, 429), a
  timeout or a connection error is retried a few times inside the call with
  exponential backoff, then raises `SmsTemporaryError`, which the caller's actor
  retries later (`retry_when` below). Any other answer that is not 2xx raises
  `SmsPermanentError` with the status and the start of the answer, for the caller to
  record: trying the same message again would be refused again.

Body template: JSON when it starts with `{` or `[`, else form fields
(`application/x-www-form-urlencoded`, `name=value&name=value`). Placeholders in JSON
string values or in form values: `{to}` (E.164, `+48601234567`), `{to_digits}`
(`48601234567`), `{body}`, `{sender}`, `{reference}` (our id of the message, the same on
every attempt, for gateways that drop duplicates); `{{` and `}}` are literal braces.
Values are inserted after the template is parsed, so quotes, `&` or diacritics in a
message never break the body. A member or field whose whole value is a placeholder
with no value (no sender configured) is left out, so the gateway's default applies.

The auth header's value never appears in logs, errors or results; neither do phone
numbers or message texts (logs name messages by their reference).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import phonenumbers
from flask import current_app
from flask_babel import gettext as _

log = logging.getLogger(__name__)

# --- errors -------------------------------------------------------------------------------


class SmsError(Exception):
    """Anything that kept an SMS from being sent."""


class SmsRefused(SmsError, ValueError):
    """The message itself cannot be sent (bad number, empty or too long text, bad sender
    name); nothing went out. `field` names the part to fix: "to", "body" or "sender"."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class SmsConfigError(SmsError, RuntimeError):
    """The CRM_SMS_* settings are wrong; `flask --app crm sms test` shows the reason."""


class SmsGatewayError(SmsError):
    """The gateway did not accept the message. `status` is the HTTP status (None when no
    answer came), `answer` the start of the answer's body (or what went wrong)."""

    def __init__(self, message: str, *, status: int | None, answer: str, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer
        self.attempts = attempts


class SmsTemporaryError(SmsGatewayError):
    """Worth trying again later (5xx, rate limit, timeout, connection trouble).
    `retry_after`: seconds the gateway asked us to wait, when it said so."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class SmsPermanentError(SmsGatewayError):
    """Refused for good (4xx, a redirect, an error named in a 2xx answer): record it."""


# How often an actor that sends SMS tries again after SmsTemporaryError (each attempt
# already retried inside the call), with Dramatiq's growing backoff in between.
ACTOR_RETRIES = 8


def retry_when(retries: int, exc: BaseException) -> bool:
    """`retry_when` for a Dramatiq actor that sends SMS: retry temporary gateway trouble,
    never a refusal, which would only be refused again."""
    return isinstance(exc, SmsTemporaryError) and retries < ACTOR_RETRIES


# --- the message --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsMessage:
    to: str  # as typed or stored; normalised to E.164 before sending
    body: str
    sender: str | None = None  # None: CRM_SMS_SENDER, else the gateway's default
    # A stable id (e.g. "reminder-42") lets a gateway that drops duplicates ignore a
    # message sent twice by a retried actor; None: a new one per send_sms call.
    reference: str | None = None


@dataclass(frozen=True)
class SmsResult:
    to: str  # E.164
    reference: str
    backend: str  # "outbox" or "http"
    segments: int
    encoding: str
    provider_id: str | None = None  # the gateway's id of the message, when it gives one
    status: int | None = None  # HTTP status of the accepting answer
    attempts: int = 1
    path: Path | None = None  # the outbox file


# --- length and segments ------------------------------------------------------------------

# 3GPP TS 23.038 (GSM 03.38) default alphabet, in code order 0x00-0x7F; 0x1B is the
# escape to the extension table (a space stands in for it: a real space is at 0x20).
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_BASIC = frozenset(_GSM_BASIC) - {"\x1b"}
# The default extension table: each of these costs two septets (escape + code).
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7 = "GSM-7"
UCS2 = "UCS-2"
# Septets (GSM-7) or UTF-16 code units (UCS-2) in one message, and in each part of a
# concatenated one (the user data header takes the difference).
_CAPACITY = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # GSM7 or UCS2
    characters: int  # code points, as a person counts them
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int  # the SMS a phone receives (and the gateway bills)
    per_segment: int  # units one segment holds at this length (160/153 or 70/67)
    remaining: int  # units still free in the last segment
    # The characters that made the text UCS-2 (in order of appearance, each once), so a
    # form can say which ones to replace to fit more in each SMS.
    non_gsm: tuple[str, ...] = field(default=())


def measure(text: str) -> SmsLength:
    """How many segments `text` takes: GSM-7 when every character is in the GSM default
    alphabet or its extension table (which costs two septets), else UCS-2, in which a
    character outside the Basic Multilingual Plane (most emoji) takes two units. A
    two-unit character is never split across segments, as phones do it."""
    non_gsm = tuple(dict.fromkeys(c for c in text if c not in GSM_BASIC and c not in GSM_EXTENSION))
    if non_gsm:
        encoding = UCS2
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
    else:
        encoding = GSM7
        sizes = [2 if c in GSM_EXTENSION else 1 for c in text]
    single, multi = _CAPACITY[encoding]
    units = sum(sizes)
    if units <= single:
        return SmsLength(encoding, len(text), units, 1, single, single - units, non_gsm)
    segments, used = 1, 0
    for size in sizes:
        if used + size > multi:
            segments, used = segments + 1, 0
        used += size
    return SmsLength(encoding, len(text), units, segments, multi, multi - used, non_gsm)


def compose(text: str, stop: str, business: str | None = None) -> str:
    """The text of an SMS to a client: the business named first (unless the text names
    it already) and the line that says how to stop SMS last (unless it is there).
    `business` defaults to the organisation's name."""
    if business is None:
        from crm.org.services import organisation

        business = organisation().name
    body = text.strip()
    business = business.strip()
    if business and business.casefold() not in body.casefold():
        body = f"{business}: {body}"
    stop = stop.strip()
    if stop and stop.casefold() not in body.casefold():
        body = f"{body}\n{stop}"
    return body


# --- numbers and senders ------------------------------------------------------------------

# Numbers that do not take SMS (or bill the sender for it); a valid number of an
# unknown type is given the benefit of the doubt.
_NO_SMS = frozenset(
    {
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.VOICEMAIL,
        phonenumbers.PhoneNumberType.PAGER,
    }
)


def default_region() -> str:
    from crm.org.services import organisation

    return organisation().default_phone_region or "PL"


def normalise_number(raw: str, region: str | None = None) -> str:
    """The number in E.164 (`+48601234567`), or SmsRefused. A number without `+country`
    is read in `region` (default: the organisation's default phone region). Landline
    and service numbers are refused: a reminder sent there would never be read.
    Messages do not repeat the number (they may end up in logs or failure records)."""
    text = (raw or "").strip()
    if not text:
        raise SmsRefused(_("Enter the mobile number to send the SMS to."), "to")
    if region is None and not text.startswith("+"):
        region = default_region()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise SmsRefused(
            _("This is not a phone number; write it like +48 601 234 567."), "to"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise SmsRefused(
            _("This is not a valid phone number; check the digits and the country code."),
            "to",
        )
    if phonenumbers.number_type(number) in _NO_SMS:
        raise SmsRefused(
            _("This is a landline or service number; an SMS needs a mobile number."), "to"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_ALPHA_SENDER = re.compile(r"[A-Za-z0-9 .&_-]{1,11}")
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{3,15}")


def normalise_sender(raw: str | None) -> str | None:
    """An alphanumeric sender name (at most 11 ASCII letters, digits, spaces or `.&_-`,
    at least one letter: what operators across the EU pass through) or a number of 3 to
    15 digits; None when empty (the gateway's default sender applies)."""
    text = (raw or "").strip()
    if not text:
        return None
    if _NUMERIC_SENDER.fullmatch(text):
        return text
    if _ALPHA_SENDER.fullmatch(text) and any(c.isalpha() for c in text):
        return text
    raise SmsRefused(
        _(
            "A sender name has at most 11 characters: letters A-Z without diacritics, "
            "digits and spaces (for example SalonAnna), or it is a phone number."
        ),
        "sender",
    )


@dataclass(frozen=True)
class PreparedSms:
    """A message that passed every check and is ready for a backend."""

    to: str
    body: str
    sender: str | None
    reference: str
    length: SmsLength


def prepare(message: SmsMessage, *, region: str | None = None) -> PreparedSms:
    """Check a message without sending it (e.g. when a reminder is booked): SmsRefused
    names what is wrong."""
    config = current_app.config
    to = normalise_number(message.to, region)
    sender = normalise_sender(
        message.sender if message.sender is not None else config.get("CRM_SMS_SENDER")
    )
    body = (message.body or "").strip()
    if not body:
        raise SmsRefused(_("The SMS has no text."), "body")
    length = measure(body)
    limit = max(1, int(config.get("CRM_SMS_MAX_SEGMENTS") or 3))
    if length.segments > limit:
        if length.encoding == UCS2:
            hint = _(
                "it takes %(segments)d SMS (the longest allowed is %(limit)d); "
                "characters such as %(chars)s halve what one SMS holds.",
                segments=length.segments,
                limit=limit,
                chars=" ".join(length.non_gsm[:5]),
            )
        else:
            hint = _(
                "it takes %(segments)d SMS (the longest allowed is %(limit)d).",
                segments=length.segments,
                limit=limit,
            )
        raise SmsRefused(_("The text is too long: %(hint)s", hint=hint), "body")
    reference = (message.reference or "").strip() or uuid.uuid4().hex
    return PreparedSms(to, body, sender, reference, length)


# --- sending ------------------------------------------------------------------------------


def send_sms(message: SmsMessage, *, sleep: Callable[[float], None] = time.sleep) -> SmsResult:
    """Send now, through whichever backend the settings name. Raises SmsRefused before
    any network call, then SmsTemporaryError or SmsPermanentError (see the module doc).
    `sleep` waits between attempts (tests pass their own)."""
    prepared = prepare(message)
    config = current_app.config
    if not config.get("CRM_SMS_URL"):
        return write_to_outbox(prepared, Path(config["CRM_OUTBOX_DIR"]))
    return HttpGateway.from_config(config, sleep=sleep).send(prepared)


def write_to_outbox(sms: PreparedSms, outbox: Path) -> SmsResult:
    """One readable JSON file per message (diacritics as they are)."""
    outbox.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = outbox / f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.sms.json"
    record = {
        "to": sms.to,
        "sender": sms.sender,
        "body": sms.body,
        "reference": sms.reference,
        "encoding": sms.length.encoding,
        "segments": sms.length.segments,
        "created_at": now.isoformat(timespec="seconds"),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a message
    return SmsResult(
        to=sms.to,
        reference=sms.reference,
        backend="outbox",
        segments=sms.length.segments,
        encoding=sms.length.encoding,
        path=path,
    )


# --- the body template --------------------------------------------------------------------

PLACEHOLDERS = frozenset({"to", "to_digits", "body", "sender", "reference"})
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]+)\}|[{}]")

DEFAULT_BODY_TEMPLATE = '{"to": "{to}", "text": "{body}", "from": "{sender}"}'


def _names(text: str, where: str) -> set[str]:
    """The placeholders in one template string; SmsConfigError on a stray brace or an
    unknown name."""
    found: set[str] = set()
    for match in _PLACEHOLDER.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise SmsConfigError(
                f"CRM_SMS_BODY_TEMPLATE: a lone {token!r} in {where}; write {token * 2} "
                "for a literal brace"
            )
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
            raise SmsConfigError(
                f"CRM_SMS_BODY_TEMPLATE: unknown placeholder {{{name}}} in {where}; known: {known}"
            )
        found.add(name)
    return found


def _fill(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece == "{{":
            return "{"
        if piece == "}}":
            return "}"
        return values[match.group(1)]

    return _PLACEHOLDER.sub(replace, text)


def _empty_placeholder(text: str, values: Mapping[str, str]) -> bool:
    match = re.fullmatch(r"\{([A-Za-z_]+)\}", text)
    return match is not None and not values[match.group(1)]


class BodyTemplate:
    """A parsed CRM_SMS_BODY_TEMPLATE (syntax in the module doc)."""

    def __init__(self, template: str) -> None:
        text = template.strip()
        if not text:
            raise SmsConfigError("CRM_SMS_BODY_TEMPLATE is empty")
        self.is_json = text[0] in "{["
        names: set[str] = set()
        if self.is_json:
            try:
                self._json = json.loads(text)
            except ValueError as exc:
                raise SmsConfigError(
                    f"CRM_SMS_BODY_TEMPLATE starts with {text[0]!r} but is not valid JSON: {exc}"
                ) from None
            for where, value in _json_strings(self._json, "$"):
                names |= _names(value, where)
            self.content_type = "application/json"
        else:
            self._form: list[tuple[str, str]] = []
            for part in text.split("&"):
                if not part:
                    continue
                name, sep, value = part.partition("=")
                if not sep or not name:
                    raise SmsConfigError(
                        f"CRM_SMS_BODY_TEMPLATE: form fields are name=value joined by &; "
                        f"got {part!r} (a JSON template starts with {{ or [)"
                    )
                # The template is literal text except for %-escapes (`+` stays a plus):
                # decode them now so the rendered body is encoded exactly once.
                name, value = unquote(name), unquote(value)
                _names(name, f"the field name {name!r}")
                names |= _names(value, f"the field {name!r}")
                self._form.append((name, value))
            self.content_type = "application/x-www-form-urlencoded"
        if "body" not in names or not names & {"to", "to_digits"}:
            raise SmsConfigError(
                "CRM_SMS_BODY_TEMPLATE must contain {body} and {to} (or {to_digits})"
            )

    def render(self, values: Mapping[str, str]) -> bytes:
        if self.is_json:
            return json.dumps(_render_json(self._json, values), ensure_ascii=False).encode()
        fields = [
            (_fill(name, values), _fill(value, values))
            for name, value in self._form
            if not _empty_placeholder(value, values)
        ]
        return urlencode(fields, encoding="utf-8").encode("ascii")


def _json_strings(node: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(where, node)]
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            found += _json_strings(key, f"the key {key!r}")
            found += _json_strings(value, f"{where}.{key}")
        return found
    if isinstance(node, list):
        return [s for i, item in enumerate(node) for s in _json_strings(item, f"{where}[{i}]")]
    return []


def _render_json(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _fill(node, values)
    if isinstance(node, dict):
        return {
            _fill(key, values): _render_json(value, values)
            for key, value in node.items()
            if not (isinstance(value, str) and _empty_placeholder(value, values))
        }
    if isinstance(node, list):
        return [_render_json(item, values) for item in node]
    return node


# --- the HTTP gateway ---------------------------------------------------------------------

_MAX_ANSWER = 64 * 1024  # bytes of an answer read at most
_ANSWER_KEPT = 500  # characters of an answer kept in errors
_MAX_WAIT = 30.0  # seconds one call waits between attempts at most
_TEMPORARY_4XX = frozenset({408, 425, 429})  # timeout, too early, too many requests


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a misconfigured URL: following it would resend the message (and
    its auth header) somewhere else, so it surfaces as a 3xx error instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_auth_header(raw: str | None) -> tuple[str, str] | None:
    text = (raw or "").strip()
    if not text:
        return None
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not value or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
        raise SmsConfigError(
            "CRM_SMS_AUTH_HEADER must be 'Name: value', e.g. 'Authorization: Bearer …' "
            "or 'X-API-Key: …'"
        )
    if not all(" " <= c <= "~" or c == "\t" for c in value):
        # HTTP header values are ASCII; a line break would smuggle in another header.
        raise SmsConfigError(
            "CRM_SMS_AUTH_HEADER must be one line of ASCII characters (the key as the "
            "gateway gives it)"
        )
    return name, value


def _json_path(document: Any, path: str) -> Any:
    """`messages.0.id`-style lookup; None when any step is missing."""
    node = document
    for step in path.split("."):
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
        if node is None:
            return None
    return node


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from gateways: ignored)."""
    try:
        seconds = float((value or "").strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class _Answer:
    status: int | None  # None: no answer (timeout, connection trouble)
    text: str  # the body's start, or what went wrong
    document: Any = None  # the body as JSON, when it was JSON
    retry_after: float | None = None


class HttpGateway:
    """POSTs each message to CRM_SMS_URL.

    The standard library's HTTP client is enough here: one short request per message,
    TLS verified against the system's certificates, proxies from the usual environment
    variables, and no extra dependency to keep patched."""

    def __init__(
        self,
        url: str,
        *,
        body_template: str = DEFAULT_BODY_TEMPLATE,
        auth_header: str | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
        retry_seconds: float = 1.0,
        id_field: str | None = None,
        error_field: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SmsConfigError("CRM_SMS_URL must be an https:// address")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            # The auth header and the messages would cross the network in clear.
            raise SmsConfigError("CRM_SMS_URL must be https:// (http:// only for localhost)")
        self.url = url
        # For messages: the URL without its query, which may hold an API key.
        self.where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self._auth = _parse_auth_header(auth_header)
        self.template = BodyTemplate(body_template or DEFAULT_BODY_TEMPLATE)
        if timeout <= 0:
            raise SmsConfigError("CRM_SMS_TIMEOUT must be more than 0 seconds")
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_seconds = max(0.0, retry_seconds)
        self.id_field = (id_field or "").strip() or None
        self.error_field = (error_field or "").strip() or None
        self._sleep = sleep
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
        if _is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # never via a proxy
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, sleep: Callable[[float], None] = time.sleep
    ) -> HttpGateway:
        return cls(
            config["CRM_SMS_URL"],
            body_template=config.get("CRM_SMS_BODY_TEMPLATE") or DEFAULT_BODY_TEMPLATE,
            auth_header=config.get("CRM_SMS_AUTH_HEADER"),
            timeout=float(config.get("CRM_SMS_TIMEOUT") or 10),
            attempts=int(config.get("CRM_SMS_ATTEMPTS") or 3),
            retry_seconds=float(config.get("CRM_SMS_RETRY_SECONDS", 1.0)),
            id_field=config.get("CRM_SMS_ID_FIELD"),
            error_field=config.get("CRM_SMS_ERROR_FIELD"),
            sleep=sleep,
        )

    @property
    def auth_header_name(self) -> str | None:
        return self._auth[0] if self._auth else None

    def __repr__(self) -> str:  # the auth value must not leak through a repr either
        return f"HttpGateway({self.where!r}, auth={self.auth_header_name!r})"

    def send(self, sms: PreparedSms) -> SmsResult:
        values = {
            "to": sms.to,
            "to_digits": sms.to.lstrip("+"),
            "body": sms.body,
            "sender": sms.sender or "",
            "reference": sms.reference,
        }
        payload = self.template.render(values)
        for attempt in range(1, self.attempts + 1):
            answer = self._post(payload)
            if answer.status is not None and 200 <= answer.status < 300:
                return self._accepted(sms, answer, attempt)
            if not self._temporary(answer):
                log.warning(
                    "SMS %s refused by %s: %s", sms.reference, self.where, self._describe(answer)
                )
                raise SmsPermanentError(
                    f"The SMS gateway refused the message: {self._describe(answer)}",
                    status=answer.status,
                    answer=answer.text,
                    attempts=attempt,
                )
            delay = self.retry_seconds * 2 ** (attempt - 1)
            if answer.retry_after is not None:
                delay = max(delay, answer.retry_after)
            if attempt == self.attempts or delay > _MAX_WAIT:
                log.warning(
                    "SMS %s not sent after %d attempt(s) to %s: %s",
                    sms.reference,
                    attempt,
                    self.where,
                    self._describe(answer),
                )
                raise SmsTemporaryError(
                    f"The SMS gateway is not available ({self._describe(answer)}) "
                    f"after {attempt} attempt(s); try again later",
                    status=answer.status,
                    answer=answer.text,
                    attempts=attempt,
                    retry_after=answer.retry_after,
                )
            log.info(
                "SMS %s: %s (attempt %d of %d), retrying in %.1f s",
                sms.reference,
                self._describe(answer),
                attempt,
                self.attempts,
                delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _post(self, payload: bytes) -> _Answer:
        headers = {
            "Content-Type": self.template.content_type,
            "Accept": "application/json, text/plain;q=0.9, */*;q=0.1",
            "User-Agent": "CRM-SMS/1.0",
        }
        if self._auth:
            headers[self._auth[0]] = self._auth[1]
        # The scheme was checked in __init__ (https, or http to this machine).
        request = urllib.request.Request(  # noqa: S310
            self.url, data=payload, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return self._read(response.status, response.headers, response.read(_MAX_ANSWER))
        except urllib.error.HTTPError as exc:  # a non-2xx answer, body readable
            try:
                raw = exc.read(_MAX_ANSWER)
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                exc.close()
            return self._read(exc.code, exc.headers, raw)
        except urllib.error.URLError as exc:  # DNS, refused connection, TLS
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                return _Answer(None, f"no answer within {self.timeout:g} s")
            return _Answer(None, f"connection failed: {reason}"[:_ANSWER_KEPT])
        except TimeoutError:  # connected, then the answer did not come in time
            return _Answer(None, f"no answer within {self.timeout:g} s")
        except (OSError, http.client.HTTPException) as exc:  # dropped mid-answer
            return _Answer(None, f"connection failed: {exc!r}"[:_ANSWER_KEPT])

    def _read(self, status: int, headers: Any, raw: bytes) -> _Answer:
        text = raw.decode("utf-8", "replace").strip()
        if self._auth:  # a gateway that echoes the request must not leak the key
            text = text.replace(self._auth[1], "***")
        document = None
        if text[:1] in ("{", "["):
            try:
                document = json.loads(text)
            except ValueError:
                document = None
        retry_after = _retry_after(headers.get("Retry-After")) if headers else None
        return _Answer(status, text[:_ANSWER_KEPT], document, retry_after)

    def _temporary(self, answer: _Answer) -> bool:
        return answer.status is None or answer.status >= 500 or answer.status in _TEMPORARY_4XX

    @staticmethod
    def _describe(answer: _Answer) -> str:
        if answer.status is None:
            return answer.text
        return f"HTTP {answer.status}: {answer.text}" if answer.text else f"HTTP {answer.status}"

    def _accepted(self, sms: PreparedSms, answer: _Answer, attempt: int) -> SmsResult:
        if self.error_field and answer.document is not None:
            # Some gateways answer 200 with {"error": ...} when they refuse a message.
            error = _json_path(answer.document, self.error_field)
            if error not in (None, False, "", 0, [], {}):
                log.warning("SMS %s refused by %s: %s", sms.reference, self.where, answer.text)
                raise SmsPermanentError(
                    f"The SMS gateway refused the message: {self._describe(answer)}",
                    status=answer.status,
                    answer=answer.text,
                    attempts=attempt,
                )
        provider_id = None
        if self.id_field and answer.document is not None:
            found = _json_path(answer.document, self.id_field)
            if isinstance(found, str | int) and not isinstance(found, bool):
                provider_id = str(found)
        return SmsResult(
            to=sms.to,
            reference=sms.reference,
            backend="http",
            segments=sms.length.segments,
            encoding=sms.length.encoding,
            provider_id=provider_id,
            status=answer.status,
            attempts=attempt,
        )
