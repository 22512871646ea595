"""A campaign's content: the body (Markdown, or HTML sanitised with nh3) with
per-recipient variables in a sandboxed Jinja environment, a plain-text alternative,
the unsubscribe link in both parts and the RFC 8058 headers.

The body is converted and sanitised once per campaign, and the result compiled into
Jinja templates; per recipient only the variables are filled in (HTML-escaped in the
HTML part), so a 100k campaign does not run Markdown or the sanitiser 100k times, and
no variable value can add markup. The message bytes are assembled directly (headers
encoded once, parts in base64) rather than through `email.message`, which costs
several times more per message.
"""

from __future__ import annotations

import base64
import html
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Any

import markdown
import nh3
from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

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


class PreparedContent:
    """A campaign's templates, compiled once; `render(variables)` per recipient."""

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
        self._subject = _compile(_TEXT_ENV, subject, "Subject")
        self._text = _compile(_TEXT_ENV, text_body + text_footer, "Body")
        self._html = _compile(_HTML_ENV, html_body + html_footer, "Body")
        self.sender_email = sender_email
        self._from = formataddr((sender_name, sender_email), charset="utf-8")
        self._domain = message_domain

    def render(self, variables: dict[str, str]) -> Rendered:
        try:
            return Rendered(
                subject=self._subject.render(variables).replace("\n", " ").strip(),
                text=self._text.render(variables),
                html=self._html.render(variables),
            )
        except UndefinedError as exc:
            raise ContentError(f"{exc.message}") from exc
        except TemplateError as exc:
            raise ContentError(str(exc)) from exc

    def message(
        self,
        *,
        to_email: str,
        to_name: str,
        variables: dict[str, str],
        now: datetime | None = None,
    ) -> tuple[bytes, Rendered, str]:
        """(RFC 5322 bytes, rendered parts, Message-ID) for one recipient."""
        rendered = self.render(variables)
        message_id = f"<{uuid.uuid4().hex}@{self._domain}>"
        boundary = f"=_{uuid.uuid4().hex}"
        unsubscribe = variables["unsubscribe_url"]
        headers = [
            f"From: {self._from}",
            f"To: {formataddr((to_name, to_email), charset='utf-8') if to_name else to_email}",
            f"Subject: {_encode_header(rendered.subject)}",
            f"Date: {_date_header(now)}",
            f"Message-ID: {message_id}",
            "MIME-Version: 1.0",
            f"List-Unsubscribe: <{unsubscribe}>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        ]
        parts = [
            "\r\n".join(headers),
            "",
            f"--{boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: base64",
            "",
            _b64(rendered.text),
            f"--{boundary}",
            'Content-Type: text/html; charset="utf-8"',
            "Content-Transfer-Encoding: base64",
            "",
            _b64(_HTML_DOCUMENT.format(body=rendered.html)),
            f"--{boundary}--",
            "",
        ]
        return "\r\n".join(parts).encode("ascii"), rendered, message_id


_HTML_DOCUMENT = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>'
)


_date_cache: list[Any] = [None, ""]


def _date_header(now: datetime | None) -> str:
    """RFC 5322 date, formatted once per second (it has no finer resolution)."""
    if now is not None:
        return format_datetime(now)
    second = int(datetime.now(UTC).timestamp())
    if _date_cache[0] != second:
        # One assignment of both: a thread never sees a new second with an old text.
        _date_cache[:] = [second, format_datetime(datetime.fromtimestamp(second, UTC))]
    return str(_date_cache[1])


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=76).encode("\r\n ")


def _b64(text: str) -> str:
    # 76-character lines (RFC 2045), CRLF line ends.
    return (
        base64.encodebytes(text.replace("\n", "\r\n").encode("utf-8"))
        .decode("ascii")
        .replace("\n", "\r\n")
        .rstrip("\r\n")
    )


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
