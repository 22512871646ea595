"""A campaign's content: the body (Markdown, or HTML sanitised with nh3) with
per-recipient variables in a sandboxed Jinja environment, a plain-text alternative,
the unsubscribe link in both parts and the RFC 8058 headers.

The body is converted and sanitised once per campaign, and the result compiled into
Jinja templates; per recipient only the variables are filled in (HTML-escaped in the
HTML part), so a 100k campaign does not run Markdown or the sanitiser 100k times, and
no variable value can add markup. A template that is only text and `{{ variable }}`
(the usual case) is also kept as a `str.format_map` pattern, which fills in the same
values for a small fraction of Jinja's cost; anything else renders through Jinja.

The message bytes are assembled directly rather than through `email.message`, which
costs many times more per message: what is the same in every message (From, the MIME
skeleton and boundary) is encoded once per campaign; per recipient come To, Subject,
Date, Message-ID, List-Unsubscribe and the two base64 parts. Tests read the result
back with the stdlib parser.
"""

from __future__ import annotations

import html
import itertools
import re
import secrets
import time
from binascii import b2a_base64
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Any

import markdown
import nh3
from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from crm.campaigns.models import BodyFormat

# The only names a campaign may use; anything else is a validation error.
VARIABLES = ("first_name", "last_name", "email", "unsubscribe_url")


class ContentError(ValueError):
    """A template that cannot be rendered; the message is meant for the user."""


def _environment(autoescape: bool) -> SandboxedEnvironment:
    # StrictUndefined: a misspelt variable is an error the form shows, not an empty gap.
    env = SandboxedEnvironment(autoescape=autoescape, undefined=StrictUndefined)
    env.globals.clear()  # no range(), dict(), lipsum() ...: only the variables
    return env


_TEXT_ENV = _environment(False)
_HTML_ENV = _environment(True)


def sanitise_html(source: str) -> str:
    return nh3.clean(source)


def body_html(body: str, body_format: str) -> str:
    """The body as sanitised HTML (still holding its {{ variables }})."""
    if body_format == BodyFormat.MARKDOWN:
        return sanitise_html(markdown.markdown(body, extensions=["sane_lists"]))
    return sanitise_html(body)


class _TextExtractor(HTMLParser):
    """HTML to readable plain text: block elements become line breaks, links keep
    their address in brackets."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href:
            href = self._href.pop()
            if href:
                self.parts.append(f" <{href}>")
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(source: str) -> str:
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def body_text(body: str, body_format: str) -> str:
    """The plain-text alternative: Markdown is readable as it is; HTML is flattened."""
    if body_format == BodyFormat.MARKDOWN:
        return body.strip()
    return html_to_text(sanitise_html(body))


@dataclass(frozen=True)
class Footer:
    """The unsubscribe line, in the organisation's language (given by the caller)."""

    text: str  # e.g. "Unsubscribe: {url}" for the plain part
    link: str  # e.g. "Unsubscribe" for the HTML link


def _compile(env: SandboxedEnvironment, source: str, where: str) -> Any:
    try:
        return env.from_string(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        at = f" (line {line})" if line else ""
        raise ContentError(f"{where}{at}: {exc.message or exc}") from exc


@dataclass
class Rendered:
    subject: str
    text: str
    html: str  # the body fragment (sanitised; the message wraps it in a document)


def _plain_parts(env: SandboxedEnvironment, source: str) -> list[str | tuple[str]] | None:
    """The template as literal text and bare `{{ name }}` outputs, or None when it uses
    anything else (tags, filters, attribute access): those render through Jinja.

    The parse comes from the same environment as the compiled template, so literal text
    already has Jinja's newline normalisation and trailing-newline rule applied."""
    tree = env.parse(source)
    parts: list[str | tuple[str]] = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append(child.data)
            elif isinstance(child, nodes.Name) and child.ctx == "load" and child.name in VARIABLES:
                parts.append((child.name,))
            else:
                return None
    return parts


def _format_string(parts: list[str | tuple[str]], crlf: bool) -> str:
    """A `str.format_map` pattern for `parts` (literal braces doubled); with `crlf` the
    literal line ends are CRLF already, as the message needs them."""
    out = []
    for part in parts:
        if isinstance(part, tuple):
            out.append("{" + part[0] + "}")
        else:
            text = part.replace("\n", "\r\n") if crlf else part
            out.append(text.replace("{", "{{").replace("}", "}}"))
    return "".join(out)


class _Part:
    """One template (subject, text or HTML). A template that is only literal text and
    variables renders with one `str.format_map` (the values escaped first in HTML),
    which gives the same text as Jinja at a small fraction of its cost per recipient;
    any other template renders through the sandboxed Jinja template."""

    def __init__(self, env: SandboxedEnvironment, source: str, where: str, *, wrap: str = ""):
        self.template = _compile(env, source, where)
        self.escape = bool(env.autoescape)
        parts = _plain_parts(env, source)
        self.names: tuple[str, ...] = ()
        self.pattern: str | None = None  # as rendered
        self.message_pattern: str | None = None  # wrapped, CRLF line ends
        self._wrap = wrap
        if parts is not None:
            self.names = tuple(dict.fromkeys(p[0] for p in parts if isinstance(p, tuple)))
            self.pattern = _format_string(parts, crlf=False)
            before, _sep, after = wrap.partition("{body}") if wrap else ("", "", "")
            braces = {ord("{"): "{{", ord("}"): "}}"}
            self.message_pattern = (
                before.replace("\n", "\r\n").translate(braces)
                + _format_string(parts, crlf=True)
                + after.replace("\n", "\r\n").translate(braces)
            )

    def _values(self, variables: dict[str, str], crlf: bool) -> dict[str, str]:
        values = {}
        for name in self.names:
            try:
                value = variables[name]
            except KeyError:
                raise ContentError(f"'{name}' is undefined") from None
            value = str(escape(value)) if self.escape else str(value)
            if crlf and "\n" in value:
                value = value.replace("\n", "\r\n")
            values[name] = value
        return values

    def render(self, variables: dict[str, str]) -> str:
        if self.pattern is None:
            return _render_jinja(self.template, variables)
        return self.pattern.format_map(self._values(variables, crlf=False))

    def render_message(self, variables: dict[str, str]) -> str:
        """Rendered, wrapped and with CRLF line ends: the text the MIME part carries."""
        if self.message_pattern is None:
            text = _render_jinja(self.template, variables)
            if self._wrap:
                text = self._wrap.replace("{body}", text)
            return text.replace("\n", "\r\n")
        return self.message_pattern.format_map(self._values(variables, crlf=True))


def _render_jinja(template: Any, variables: dict[str, str]) -> str:
    try:
        return str(template.render(variables))
    except UndefinedError as exc:
        raise ContentError(f"{exc.message}") from exc
    except TemplateError as exc:
        raise ContentError(str(exc)) from exc


_HTML_DOCUMENT = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>'
)


class PreparedContent:
    """A campaign's templates, compiled once; per recipient `build()` (the message
    bytes) or `render()` (the parts, for previews).

    Everything that is the same in every message is computed here: the From line, the
    MIME skeleton (one boundary per campaign: the parts are base64, whose alphabet
    cannot contain "=_", so no body can collide with it), the message-id prefix."""

    def __init__(
        self,
        *,
        subject: str,
        body: str,
        body_format: str,
        sender_name: str,
        sender_email: str,
        footer: Footer,
        message_domain: str = "crm.local",
    ) -> None:
        html_body = body_html(body, body_format)
        text_body = body_text(body, body_format)
        # The footer's {{ unsubscribe_url }} is ours: the link is in every message even
        # when the body forgets it.
        text_footer = "\n\n-- \n" + footer.text.replace("{url}", "{{ unsubscribe_url }}")
        link = html.escape(footer.link)
        html_footer = f'\n<hr>\n<p><a href="{{{{ unsubscribe_url }}}}">{link}</a></p>'
        self._subject = _Part(_TEXT_ENV, subject, "Subject")
        self._text = _Part(_TEXT_ENV, text_body + text_footer, "Body")
        self._html = _Part(_HTML_ENV, html_body + html_footer, "Body", wrap=_HTML_DOCUMENT)
        self.sender_email = sender_email
        self._from = _address(sender_name, sender_email)
        self._domain = message_domain
        # Unique across processes and campaigns (random), and within one (the counter).
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)
        boundary = f"=_{secrets.token_hex(16)}"
        self._head_end = (
            "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"
            f'\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"'
            f"\r\n\r\n--{boundary}"
            '\r\nContent-Type: text/plain; charset="utf-8"'
            "\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ).encode("ascii")
        self._between = (
            f"\r\n--{boundary}"
            '\r\nContent-Type: text/html; charset="utf-8"'
            "\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ).encode("ascii")
        self._end = f"\r\n--{boundary}--\r\n".encode("ascii")

    def render(self, variables: dict[str, str]) -> Rendered:
        return Rendered(
            subject=self.subject(variables),
            text=self._text.render(variables),
            html=self._html.render(variables),
        )

    def subject(self, variables: dict[str, str]) -> str:
        return _one_line(self._subject.render(variables))

    def build(
        self,
        *,
        to_email: str,
        to_name: str,
        variables: dict[str, str],
        now: datetime | None = None,
    ) -> tuple[bytes, str, str]:
        """(RFC 5322 bytes, subject, Message-ID) for one recipient: the sending path."""
        subject = self.subject(variables)
        text = self._text.render_message(variables)
        html_document = self._html.render_message(variables)
        message_id = f"<{self._id_prefix}.{next(self._ids)}@{self._domain}>"
        unsubscribe = variables["unsubscribe_url"]
        if "\n" in unsubscribe or "\r" in unsubscribe or ">" in unsubscribe:
            raise ContentError("the unsubscribe link cannot be put in a header")
        head = (
            f"From: {self._from}\r\nTo: {_address(to_name, to_email)}"
            f"\r\nSubject: {_encode_header(subject)}\r\nDate: {_date_header(now)}"
            f"\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0"
            f"\r\nList-Unsubscribe: <{unsubscribe}>"
        )
        try:
            head_bytes = head.encode("ascii")
        except UnicodeEncodeError:
            raise ContentError("a header holds characters that cannot be sent") from None
        raw = b"".join(
            (
                head_bytes,
                self._head_end,
                _b64(text.encode("utf-8")),
                self._between,
                _b64(html_document.encode("utf-8")),
                self._end,
            )
        )
        return raw, subject, message_id

    def message(
        self,
        *,
        to_email: str,
        to_name: str,
        variables: dict[str, str],
        now: datetime | None = None,
    ) -> tuple[bytes, Rendered, str]:
        """(RFC 5322 bytes, rendered parts, Message-ID) for one recipient."""
        raw, _subject, message_id = self.build(
            to_email=to_email, to_name=to_name, variables=variables, now=now
        )
        return raw, self.render(variables), message_id


def _one_line(value: str) -> str:
    # A header value never holds a line break: it would end the header (or add one).
    if "\n" in value or "\r" in value:
        value = value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return value.strip()


_date_cache: list[Any] = [None, ""]


def _date_header(now: datetime | None) -> str:
    """RFC 5322 date, formatted once per second (it has no finer resolution)."""
    if now is not None:
        return format_datetime(now)
    second = int(time.time())
    if _date_cache[0] != second:
        # One assignment of both: a thread never sees a new second with an old text.
        _date_cache[:] = [second, format_datetime(datetime.fromtimestamp(second, UTC))]
    return str(_date_cache[1])


# Bytes of UTF-8 per encoded word: 42 bytes are 56 base64 characters, so a word is 68
# characters and "Subject: " plus one word stays within the 78 RFC 5322 recommends.
_WORD_BYTES = 42


def _encoded_words(value: str) -> str:
    """RFC 2047 base64 encoded words, folded between words, never splitting a
    character (each word must decode on its own)."""
    data = value.encode("utf-8")
    words = []
    start, size = 0, len(data)
    while start < size:
        end = min(start + _WORD_BYTES, size)
        while end < size and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        words.append("=?utf-8?b?" + b2a_base64(data[start:end], newline=False).decode() + "?=")
        start = end
    return "\r\n ".join(words)


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    return _encoded_words(value)


# A display name made only of these needs neither quotes nor encoding.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")


def _address(name: str, email: str) -> str:
    """A From or To value for one address, which must be ASCII (we do not speak
    SMTPUTF8). A non-ASCII name is one encoded word, as `formataddr` writes it: split
    into several, the stdlib parser (the card, the export) reads the folds as spaces
    inside the name."""
    if not email.isascii():
        raise ContentError("the address is not ASCII")
    name = _one_line(name)
    if not name:
        return email
    if not name.isascii():
        encoded = b2a_base64(name.encode("utf-8"), newline=False).decode()
        return f"=?utf-8?b?{encoded}?= <{email}>"
    if _PLAIN_NAME.fullmatch(name):
        return f"{name} <{email}>"
    return formataddr((name, email))  # quoted, with escapes


def _b64(data: bytes) -> bytes:
    # 76-character lines (RFC 2045) with CRLF line ends, encoded in one C call.
    encoded = b2a_base64(data, newline=False)
    if len(encoded) <= 76:
        return encoded
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)])


def check_template(subject: str, body: str, body_format: str) -> str | None:
    """A message for the user when subject or body cannot be rendered, else None."""
    sample = {
        "first_name": "Zofia",
        "last_name": "Wiśniewska",
        "email": "zofia@example.com",
        "unsubscribe_url": "https://example.com/unsubscribe",
    }
    try:
        content = PreparedContent(
            subject=subject,
            body=body,
            body_format=body_format,
            sender_name="",
            sender_email="sender@example.com",
            footer=Footer("{url}", "x"),
        )
        content.render(sample)
    except ContentError as exc:
        return str(exc)
    return None
