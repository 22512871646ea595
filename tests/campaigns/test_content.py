"""The message builder and the campaign's unsubscribe links: what they produce must be
what the general paths (Jinja, the stdlib `email` package, `unsubscribe_url`) produce
or read back."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from crm.campaigns.content import (
    _HTML_ENV,
    _TEXT_ENV,
    ContentError,
    Footer,
    PreparedContent,
    _Part,
)
from crm.campaigns.links import UnsubscribeLinks
from crm.extensions import db
from crm.mailing import services as mailing
from crm.mailing.models import MailingList
from tests.campaigns.conftest import make_list
from tests.conftest import make_client

LINK = "https://crm.example.com/lists/u/WzEsMiwzXQ.abc-DEF_123"
FOOTER = Footer(text="Wypisz się: {url}", link="Wypisz się")


def _content(**values: str) -> PreparedContent:
    return PreparedContent(
        subject=values.get("subject", "Nowości z Łodzi dla {{ first_name }}"),
        body=values.get(
            "body",
            "# Dzień dobry {{ first_name }} {{ last_name }}!\n\n"
            "Grüße aus **Łódź**, {{ email }}.\n\n* strzyżenie\n* koloryzacja\n",
        ),
        body_format=values.get("body_format", "markdown"),
        sender_name=values.get("sender_name", "Salon Łódź"),
        sender_email="biuro@example.pl",
        footer=FOOTER,
        message_domain="crm.example.com",
    )


def _variables(first: str, last: str, email: str, link: str = LINK) -> dict[str, str]:
    return {"first_name": first, "last_name": last, "email": email, "unsubscribe_url": link}


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def _line_lengths(raw: bytes) -> list[int]:
    lines = raw.split(b"\r\n")
    return [len(line) for line in lines if not line.startswith(b"List-Unsubscribe: ")]


@pytest.mark.parametrize(
    ("first", "last", "email"),
    [
        ("Jiří", "Dvořák", "jiri@example.cz"),
        ("Jürgen", "Müller", "juergen@example.de"),
        ("Łukasz", "Łódź", "lukasz@example.pl"),
        ("Ann", "Smith", "ann@example.com"),
    ],
)
def test_the_message_reads_back_with_its_headers_parts_and_variables(first, last, email):
    content = _content()
    raw, subject, message_id = content.build(
        to_email=email, to_name=f"{first} {last}", variables=_variables(first, last, email)
    )
    message = _parse(raw)
    assert subject == f"Nowości z Łodzi dla {first}"
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Salon Łódź"
    assert message["From"].addresses[0].addr_spec == "biuro@example.pl"
    assert message["To"].addresses[0].display_name == f"{first} {last}"
    assert message["To"].addresses[0].addr_spec == email
    assert message["Message-ID"] == message_id
    assert re.fullmatch(r"<[0-9a-f]{16}\.\d+@crm\.example\.com>", message_id)
    assert message["Date"].datetime.tzinfo is not None
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == f"<{LINK}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"Dzień dobry {first} {last}!" in text
    assert f"Grüße aus **Łódź**, {email}." in text
    assert text.rstrip().endswith(f"Wypisz się: {LINK}")
    assert f"<h1>Dzień dobry {first} {last}!</h1>" in html
    assert "<strong>Łódź</strong>" in html and "<li>koloryzacja</li>" in html
    assert f'<a href="{LINK}">Wypisz się</a>' in html
    assert html.startswith("<!DOCTYPE html>")
    # CRLF line ends throughout, no line longer than RFC 5322's recommended 78 but the
    # unsubscribe URL's (which must not be folded).
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(_line_lengths(raw)) <= 78
    # Both parts base64, as the header says.
    assert {p["Content-Transfer-Encoding"] for p in parts} == {"base64"}


def test_message_and_build_agree_and_ids_differ():
    content = _content()
    variables = _variables("Zofia", "Wiśniewska", "z@example.pl")
    first, _subject, first_id = content.build(
        to_email="z@example.pl", to_name="Zofia Wiśniewska", variables=variables
    )
    raw, rendered, second_id = content.message(
        to_email="z@example.pl", to_name="Zofia Wiśniewska", variables=variables
    )
    assert first_id != second_id
    parsed = _parse(raw)
    assert parsed["Subject"] == rendered.subject
    assert rendered.text == parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert rendered.html in parsed.get_body(("html",)).get_content().replace("\r\n", "\n")
    # Same content otherwise: only Message-ID differs between the two messages.
    strip = re.compile(rb"Message-ID: [^\r]*\r\n")
    assert strip.sub(b"", first) == strip.sub(b"", raw)


@pytest.mark.parametrize(
    ("env", "source"),
    [
        (_TEXT_ENV, "Dzień dobry {{ first_name }} {{last_name}}!\n\n{{ email }}\n"),
        (_TEXT_ENV, "Braces { stay } and {{ '{' }} too: {{ first_name }}"),
        (_TEXT_ENV, "No variables at all\r\nWindows line ends\r\n"),
        (_TEXT_ENV, ""),
        (
            _HTML_ENV,
            '<p>{{ first_name }} & {{ last_name }}</p><a href="{{ unsubscribe_url }}">x</a>',
        ),
        (_HTML_ENV, "<p>{{ first_name|upper }} {% if last_name %}{{ last_name }}{% endif %}</p>"),
        (_TEXT_ENV, "{# a comment #}{{ first_name }}{% raw %}{{ not a variable }}{% endraw %}"),
    ],
)
def test_the_quick_render_is_what_jinja_renders(env, source):
    part = _Part(env, source, "Body")
    for values in [
        _variables("Jiří", "Dvořák", "jiri@example.cz"),
        _variables('<script>"x"</script>', "O'Brien & Co {x}", "a@b.c", "https://x/?a=1&b=2"),
        _variables("Line\nbreak", "{0}", "e@example.com"),
    ]:
        assert part.render(values) == part.template.render(values)
        expected = part.template.render(values).replace("\n", "\r\n")
        assert part.render_message(values) == expected


def test_templates_with_tags_or_filters_render_through_jinja():
    part = _Part(_TEXT_ENV, "{{ first_name|upper }}", "Body")
    assert part.pattern is None
    assert part.render(_variables("łucja", "", "")) == "ŁUCJA"
    plain = _Part(_TEXT_ENV, "Hi {{ first_name }}", "Body")
    assert plain.pattern is not None


def test_values_cannot_add_markup_or_headers():
    content = _content(body="<p>{{ first_name }}</p>", body_format="html")
    raw, subject, _mid = content.build(
        to_email="x@example.pl",
        to_name="Eve\r\nBcc: victim@example.com",
        variables=_variables('<img src=x onerror="alert(1)">\nBcc: a@b.c', "", "x@example.pl"),
    )
    message = _parse(raw)
    assert message["Bcc"] is None
    assert message["To"].addresses[0].addr_spec == "x@example.pl"
    html = message.get_body(("html",)).get_content()
    assert "<img" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "\n" not in subject


def test_long_subjects_fold_into_words_and_long_names_decode():
    subject = "Łódź " * 30 + "{{ first_name }}"
    content = _content(subject=subject, sender_name="Zakład Fryzjerski „Łódź” " * 3)
    name = "Żaneta Ćwierć-Łęcka " * 4
    raw, rendered_subject, _mid = content.build(
        to_email="z@example.pl",
        to_name=name,
        variables=_variables("Żaneta", "Ćwierć", "z@example.pl"),
    )
    message = _parse(raw)
    assert message["Subject"] == rendered_subject == ("Łódź " * 30 + "Żaneta")
    assert message["To"].addresses[0].display_name == name.strip()
    assert message["From"].addresses[0].display_name == ("Zakład Fryzjerski „Łódź” " * 3).strip()
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines if line.startswith((b"Subject:", b" =?")))
    assert max(len(line) for line in lines) <= 998


def test_ascii_names_with_specials_are_quoted():
    content = _content()
    raw, _subject, _mid = content.build(
        to_email="o@example.com",
        to_name='O\'Brien, "Jr."',
        variables=_variables("Pat", "O'Brien", "o@example.com"),
    )
    assert _parse(raw)["To"].addresses[0].display_name == 'O\'Brien, "Jr."'


def test_an_address_that_cannot_be_sent_is_a_content_error():
    with pytest.raises(ContentError):
        _content().build(
            to_email="łucja@example.pl", to_name="", variables=_variables("Ł", "", "x")
        )


def test_a_missing_variable_is_a_content_error():
    with pytest.raises(ContentError):
        _content().build(to_email="a@example.pl", to_name="", variables={"first_name": "A"})


def test_campaign_links_are_the_general_links(app):
    with app.app_context():
        mlist = make_list()
        client = make_client(first_name="Jiří", last_name="Dvořák", email="jiri@example.cz")
        mailing.subscribe(client, db.session.get(MailingList, mlist.id))
        db.session.commit()
        for campaign_id in (None, 1, 987_654):
            links = UnsubscribeLinks(campaign_id)
            assert links.fast
            for client_id, list_id in [(client.id, mlist.id), (1, 1), (2**31 - 1, 77)]:
                expected = mailing.unsubscribe_url(client_id, list_id, campaign_id)
                assert links(client_id, list_id) == expected
        url = UnsubscribeLinks(5)(client.id, mlist.id)
        assert url.startswith(app.config["CRM_BASE_URL"].rstrip("/") + "/")
        sub, campaign_id = mailing.unsubscribe_subscription(url.rsplit("/", 1)[1])
        assert (sub.client_id, sub.list_id, campaign_id) == (client.id, mlist.id, 5)


def test_campaign_links_fall_back_when_the_quick_path_disagrees(app, monkeypatch):
    with app.app_context():
        monkeypatch.setattr(UnsubscribeLinks, "_SAMPLES", ((1, 1),))
        monkeypatch.setattr("crm.campaigns.links._b64", lambda data: "changed")
        links = UnsubscribeLinks(3)
        assert not links.fast
        assert links(4, 5) == mailing.unsubscribe_url(4, 5, 3)
