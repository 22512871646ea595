"""SMS: numbers, length, the outbox, and the HTTP gateway against a local HTTP server."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from flask import Flask

from crm import sms
from crm.extensions import db
from crm.org.services import organisation_for_update

KEY = "sk_live_6Jq2Zx-9f3a"  # an auth value that must never show up anywhere


# --- a local SMS gateway ---------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: str = '{"messages": [{"id": "gw-1", "status": "queued"}]}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow gateway)
    content_type: str = "application/json"


@dataclass
class Received:
    method: str
    path: str
    headers: Message  # names in any case, as HTTP has them
    body: bytes


class LocalGateway:
    """An HTTP server on 127.0.0.1 that answers each request with the next scripted
    reply (200 when the script is used up) and records what it received."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with gateway._lock:
                    gateway.requests.append(Received(self.command, self.path, self.headers, body))
                    reply = gateway.replies.pop(0) if gateway.replies else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting (the timeout test)
                    pass

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    server = LocalGateway()
    yield server
    server.close()


@pytest.fixture
def outbox(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outbox"
    monkeypatch.setitem(app.config, "CRM_OUTBOX_DIR", str(folder))
    monkeypatch.setitem(app.config, "CRM_SMS_URL", None)
    return folder


def use_gateway(
    app: Flask, monkeypatch: pytest.MonkeyPatch, gateway: LocalGateway, **settings: Any
) -> None:
    values: dict[str, Any] = {
        "CRM_SMS_URL": f"{gateway.url}/v1/sms?account=7",
        "CRM_SMS_AUTH_HEADER": f"X-API-Key: {KEY}",
        "CRM_SMS_BODY_TEMPLATE": '{"to": "{to}", "text": "{body}", "from": "{sender}"}',
        "CRM_SMS_SENDER": None,
        "CRM_SMS_TIMEOUT": 5.0,
        "CRM_SMS_ATTEMPTS": 3,
        "CRM_SMS_RETRY_SECONDS": 1.0,
        "CRM_SMS_ID_FIELD": "messages.0.id",
        "CRM_SMS_ERROR_FIELD": None,
        "CRM_SMS_MAX_SEGMENTS": 3,
    }
    values.update(settings)
    for key, value in values.items():
        monkeypatch.setitem(app.config, key, value)


def send(app: Flask, message: sms.SmsMessage, delays: list[float] | None = None) -> sms.SmsResult:
    with app.app_context():
        return sms.send_sms(message, sleep=(delays if delays is not None else []).append)


# --- length and segments ---------------------------------------------------------------


def test_plain_text_is_gsm7_with_160_characters_in_one_sms():
    assert sms.measure("a" * 160) == sms.SmsLength(sms.GSM7, 160, 160, 1, 160, 0)
    longer = sms.measure("a" * 161)
    assert (longer.segments, longer.per_segment, longer.remaining) == (2, 153, 145)
    assert sms.measure("a" * 306).segments == 2
    assert sms.measure("a" * 307).segments == 3


def test_german_umlauts_and_eszett_are_in_the_gsm_alphabet():
    text = "Grüße aus München! Ihr Termin bei Müller & Söhne ist am Dienstag um 10:00 Uhr."
    length = sms.measure(text)
    assert length.encoding == sms.GSM7
    assert (length.units, length.segments, length.non_gsm) == (len(text), 1, ())
    # ö and Ä are GSM-7, ł is not.
    assert sms.measure("ö Ä é ñ ß").encoding == sms.GSM7
    assert sms.measure("ł").encoding == sms.UCS2


def test_polish_and_czech_diacritics_need_ucs2():
    polish = sms.measure("Zażółć gęślą jaźń. Wizyta w Łodzi jutro o 9:30.")
    assert polish.encoding == sms.UCS2
    assert polish.non_gsm == ("ż", "ó", "ł", "ć", "ę", "ś", "ą", "ź", "ń", "Ł")
    assert (polish.segments, polish.per_segment) == (1, 70)
    czech = sms.measure("Dvořák: příští středa v 10:00. Těšíme se!")
    assert czech.encoding == sms.UCS2 and "ř" in czech.non_gsm
    assert sms.measure("ř" * 70).segments == 1
    two = sms.measure("ř" * 71)
    assert (two.segments, two.per_segment, two.remaining) == (2, 67, 63)
    assert sms.measure("ł" * 134).segments == 2
    assert sms.measure("ł" * 135).segments == 3


def test_extension_characters_take_two_septets_and_are_never_split():
    euro = sms.measure("Cena: 120 € [VAT]")
    assert euro.encoding == sms.GSM7
    assert euro.units == len("Cena: 120 € [VAT]") + 3  # €, [ and ] take two each
    assert sms.measure("€" * 80).segments == 1  # 160 septets
    # 306 septets would fill two parts of 153, but the € after 152 septets would
    # straddle the first boundary: it moves to the second part, and one septet spills
    # into a third.
    split = sms.measure("a" * 152 + "€" + "a" * 152)
    assert (split.units, split.segments, split.remaining) == (306, 3, 152)


def test_emoji_take_two_ucs2_units_and_are_never_split():
    assert sms.measure("🙂").units == 2
    assert sms.measure("🙂" * 35).segments == 1
    split = sms.measure("ł" * 66 + "🙂" + "ł" * 66)  # 134 units, yet three parts
    assert (split.units, split.segments, split.remaining) == (134, 3, 66)


def test_compose_names_the_business_and_how_to_stop():
    stop = "Bez SMS? Odpisz STOP."
    text = sms.compose("Przypominamy o wizycie jutro o 10:00.", stop, business="Salon Żaneta")
    assert text == "Salon Żaneta: Przypominamy o wizycie jutro o 10:00.\nBez SMS? Odpisz STOP."
    # Said already: nothing is repeated.
    assert sms.compose(text, stop, business="Salon Żaneta") == text


def test_compose_takes_the_business_name_from_the_organisation(app):
    with app.app_context():
        organisation_for_update().name = "Zakład Fryzjerski Łódź"
        db.session.commit()
        assert sms.compose("Wizyta jutro.", "STOP: 8080").startswith("Zakład Fryzjerski Łódź: ")


# --- numbers and senders ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("601 234 567", "PL", "+48601234567"),
        ("+48 601-234-567", None, "+48601234567"),
        ("0048 601 234 567", "PL", "+48601234567"),
        ("+420 601 123 456", None, "+420601123456"),
        ("0151 23456789", "DE", "+4915123456789"),
        ("(+49) 151 2345 6789", "PL", "+4915123456789"),
    ],
)
def test_numbers_become_e164(app, raw, region, expected):
    with app.app_context():
        assert sms.normalise_number(raw, region) == expected


def test_a_number_without_country_uses_the_organisations_region(app):
    with app.app_context():
        organisation_for_update().default_phone_region = "CZ"
        db.session.commit()
        assert sms.normalise_number("601 123 456") == "+420601123456"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "Enter the mobile number"),
        ("abc", "not a phone number"),
        ("12", "not a valid phone number"),
        ("+48 601 234 56", "not a valid phone number"),
        ("22 123 45 67", "landline or service number"),
        ("+48 800 123 456", "landline or service number"),
    ],
)
def test_bad_numbers_are_refused_with_a_clear_message(app, raw, says):
    with app.app_context(), pytest.raises(sms.SmsRefused) as refused:
        sms.normalise_number(raw, "PL")
    assert says in str(refused.value) and refused.value.field == "to"


@pytest.mark.parametrize("raw", ["SalonAnna", "Salon Anna", "Dr.Nowak", "48601234567", "+4860"])
def test_good_senders_pass(raw):
    assert sms.normalise_sender(raw) == raw


@pytest.mark.parametrize("raw", ["Salon Żaneta", "SalonAnnaNowak", "12", "!!", "Anna@Salon"])
def test_bad_senders_are_refused(app, raw):
    with app.app_context(), pytest.raises(sms.SmsRefused) as refused:
        sms.normalise_sender(raw)
    assert refused.value.field == "sender" and "11 characters" in str(refused.value)


def test_an_empty_sender_means_the_gateway_default():
    assert sms.normalise_sender("  ") is None and sms.normalise_sender(None) is None


def test_too_long_and_empty_texts_are_refused(app, monkeypatch, outbox):
    monkeypatch.setitem(app.config, "CRM_SMS_MAX_SEGMENTS", 2)
    with app.app_context():
        with pytest.raises(sms.SmsRefused) as long_polish:
            sms.send_sms(sms.SmsMessage("+48601234567", "Wizyta w Łodzi. " + "ą" * 130))
        assert long_polish.value.field == "body"
        message = str(long_polish.value)
        assert "3 SMS" in message and "longest allowed is 2" in message and "Ł ą" in message
        with pytest.raises(sms.SmsRefused) as empty:
            sms.send_sms(sms.SmsMessage("+48601234567", "  \n "))
        assert empty.value.field == "body"
        # 2 x 67 units fit.
        sms.send_sms(sms.SmsMessage("+48601234567", "ą" * 134))
    assert not outbox.exists() or len(list(outbox.glob("*.sms.json"))) == 1


# --- the outbox ------------------------------------------------------------------------


def test_without_a_gateway_each_sms_is_a_readable_file_in_the_outbox(app, outbox):
    body = "Salon Łódź: wizyta jutro 10:00, Dvořák & Müller, ul. Piotrkowska 1.\nBez SMS? STOP."
    with app.app_context():
        result = sms.send_sms(
            sms.SmsMessage("601 234 567", body, sender="SalonLodz", reference="reminder-42")
        )
    assert result.backend == "outbox" and result.to == "+48601234567"
    assert result.provider_id is None and result.reference == "reminder-42"
    files = list(outbox.glob("*.sms.json"))
    assert files == [result.path]
    assert result.path is not None and result.path.name.endswith(".sms.json")
    text = result.path.read_text(encoding="utf-8")
    assert "Łódź" in text and "Dvořák" in text  # readable as it is, not \u-escaped
    record = json.loads(text)
    assert record["to"] == "+48601234567" and record["body"] == body
    assert record["sender"] == "SalonLodz" and record["reference"] == "reminder-42"
    assert (record["encoding"], record["segments"]) == ("UCS-2", 2)
    assert not list(outbox.glob("*.tmp"))


def test_the_configured_sender_applies_when_a_message_names_none(app, outbox, monkeypatch):
    monkeypatch.setitem(app.config, "CRM_SMS_SENDER", "MyClinic")
    with app.app_context():
        result = sms.send_sms(sms.SmsMessage("+48601234567", "Hello"))
    assert result.path is not None
    assert json.loads(result.path.read_text(encoding="utf-8"))["sender"] == "MyClinic"


# --- the HTTP gateway ------------------------------------------------------------------


def test_json_template_is_posted_with_the_auth_header(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    body = 'Salon "Łódź": wizyta jutro & {nie} zapomnij'
    result = send(app, sms.SmsMessage("601 234 567", body, sender="SalonLodz"))
    assert (result.backend, result.provider_id, result.status, result.attempts) == (
        "http",
        "gw-1",
        200,
        1,
    )
    [request] = gateway.requests
    assert request.method == "POST" and request.path == "/v1/sms?account=7"
    assert request.headers["X-API-Key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"to": "+48601234567", "text": body, "from": "SalonLodz"}


def test_a_member_holding_only_an_empty_placeholder_is_left_out(app, monkeypatch, gateway):
    use_gateway(
        app,
        monkeypatch,
        gateway,
        CRM_SMS_BODY_TEMPLATE=(
            '{"messages": [{"recipients": ["{to_digits}"], "content": "{body}",'
            ' "sender": "{sender}", "ref": "crm-{reference}", "unicode": true}]}'
        ),
        CRM_SMS_ID_FIELD="ids.0",
    )
    gateway.replies.append(Reply(body='{"ids": [9381]}'))
    result = send(app, sms.SmsMessage("+420601123456", "Těšíme se", reference="r-7"))
    assert result.provider_id == "9381"
    sent = json.loads(gateway.requests[0].body)
    assert sent == {
        "messages": [
            {
                "recipients": ["420601123456"],
                "content": "Těšíme se",
                "ref": "crm-r-7",
                "unicode": True,
            }
        ]
    }


def test_form_template_is_posted_form_encoded(app, monkeypatch, gateway):
    use_gateway(
        app,
        monkeypatch,
        gateway,
        CRM_SMS_AUTH_HEADER=f"Authorization: Bearer {KEY}",
        CRM_SMS_BODY_TEMPLATE="to={to}&message={body}&from={sender}&format=json&note=a%20b+c",
        CRM_SMS_SENDER="Warsztat",
        CRM_SMS_ID_FIELD="list.0.id",
    )
    gateway.replies.append(Reply(body='{"count": 1, "list": [{"id": "5F2A", "points": 0.16}]}'))
    body = "Odbiór auta: 12+3 zł & więcej?"
    result = send(app, sms.SmsMessage("+48 601 234 567", body))
    assert result.provider_id == "5F2A"
    [request] = gateway.requests
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode("ascii"), strict_parsing=True) == {
        "to": ["+48601234567"],
        "message": [body],
        "from": ["Warsztat"],
        "format": ["json"],
        "note": ["a b+c"],
    }


def test_double_braces_are_literal_and_values_are_never_read_as_placeholders():
    template = sms.BodyTemplate('{"text": "{{ref}} {body}", "to": "{to}"}')
    values = {
        "to": "+48601234567",
        "to_digits": "48601234567",
        "body": "{to} }} {{",
        "sender": "",
        "reference": "r",
    }
    assert json.loads(template.render(values)) == {"text": "{ref} {to} }} {{", "to": values["to"]}
    form = sms.BodyTemplate("msisdn={to_digits}&text={body}&tag={{x}}")
    assert form.content_type == "application/x-www-form-urlencoded"
    assert parse_qs(form.render(values).decode()) == {
        "msisdn": ["48601234567"],
        "text": ["{to} }} {{"],
        "tag": ["{x}"],
    }


def test_two_503s_then_success(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    gateway.replies += [Reply(503, "busy"), Reply(503, "busy")]
    delays: list[float] = []
    result = send(app, sms.SmsMessage("+48601234567", "Hello"), delays)
    assert result.attempts == 3 and result.provider_id == "gw-1"
    assert delays == [1.0, 2.0]  # exponential backoff
    assert len(gateway.requests) == 3
    assert len({r.body for r in gateway.requests}) == 1  # the same message, same reference


def test_three_500s_raise_a_temporary_error(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    gateway.replies += [Reply(500, "oops")] * 3 + [Reply()]
    delays: list[float] = []
    with pytest.raises(sms.SmsTemporaryError) as failed:
        send(app, sms.SmsMessage("+48601234567", "Hello"), delays)
    assert (failed.value.status, failed.value.attempts, failed.value.answer) == (500, 3, "oops")
    assert len(gateway.requests) == 3 and delays == [1.0, 2.0]
    assert sms.retry_when(0, failed.value) is True
    assert sms.retry_when(sms.ACTOR_RETRIES, failed.value) is False


def test_a_400_is_a_permanent_error_carrying_the_answer(app, monkeypatch, gateway, caplog):
    use_gateway(app, monkeypatch, gateway)
    answer = json.dumps({"error": "invalid_sender", "echo": {"X-API-Key": KEY}, "pad": "x" * 900})
    gateway.replies.append(Reply(400, answer))
    delays: list[float] = []
    with (
        caplog.at_level(logging.INFO, logger="crm.sms"),
        pytest.raises(sms.SmsPermanentError) as refused,
    ):
        send(app, sms.SmsMessage("+48601234567", "Hello Łódź"), delays)
    error = refused.value
    assert error.status == 400 and error.attempts == 1 and delays == []
    assert "invalid_sender" in error.answer and len(error.answer) == 500
    assert "HTTP 400" in str(error)
    assert len(gateway.requests) == 1
    assert sms.retry_when(0, error) is False
    # Neither the key nor the number nor the text leaks into errors or logs.
    for text in (str(error), error.answer, caplog.text):
        assert KEY not in text and "601234567" not in text and "Łódź" not in text
    assert "***" in error.answer


def test_a_timeout_is_retried(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway, CRM_SMS_TIMEOUT=0.3)
    gateway.replies += [Reply(delay=1.5), Reply(body='{"messages": [{"id": "after-timeout"}]}')]
    delays: list[float] = []
    started = time.monotonic()
    result = send(app, sms.SmsMessage("+48601234567", "Hello"), delays)
    assert result.provider_id == "after-timeout" and result.attempts == 2
    assert delays == [1.0] and len(gateway.requests) == 2
    assert time.monotonic() - started < 1.4  # gave up on the slow answer at the timeout


def test_timeouts_every_time_raise_a_temporary_error(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway, CRM_SMS_TIMEOUT=0.2, CRM_SMS_ATTEMPTS=2)
    gateway.replies += [Reply(delay=0.6), Reply(delay=0.6)]
    with pytest.raises(sms.SmsTemporaryError) as failed:
        send(app, sms.SmsMessage("+48601234567", "Hello"))
    assert failed.value.status is None and "no answer within 0.2 s" in str(failed.value)


def test_a_closed_port_is_a_temporary_error(app, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {
        "CRM_SMS_URL": f"http://127.0.0.1:{port}/sms",
        "CRM_SMS_BODY_TEMPLATE": None,
        "CRM_SMS_AUTH_HEADER": None,
        "CRM_SMS_ATTEMPTS": 2,
    }.items():
        monkeypatch.setitem(app.config, key, value)
    delays: list[float] = []
    with pytest.raises(sms.SmsTemporaryError) as failed:
        send(app, sms.SmsMessage("+48601234567", "Hello"), delays)
    assert failed.value.attempts == 2 and "connection failed" in str(failed.value)
    assert delays == [1.0]


def test_rate_limits_are_temporary_and_retry_after_is_honoured(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    gateway.replies += [Reply(429, "slow down", {"Retry-After": "4"}), Reply()]
    delays: list[float] = []
    assert send(app, sms.SmsMessage("+48601234567", "Hello"), delays).attempts == 2
    assert delays == [4.0]
    # Too long to wait inside the call: the actor retries later.
    gateway.replies.append(Reply(503, "maintenance", {"Retry-After": "600"}))
    with pytest.raises(sms.SmsTemporaryError) as failed:
        send(app, sms.SmsMessage("+48601234567", "Hello"), delays)
    assert failed.value.retry_after == 600 and failed.value.attempts == 1


def test_an_error_named_in_a_200_answer_is_permanent(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway, CRM_SMS_ERROR_FIELD="error")
    gateway.replies.append(Reply(200, '{"error": 13, "message": "No correct phone numbers"}'))
    with pytest.raises(sms.SmsPermanentError) as refused:
        send(app, sms.SmsMessage("+48601234567", "Hello"))
    assert refused.value.status == 200 and "No correct phone numbers" in refused.value.answer
    # The same field absent: accepted.
    assert send(app, sms.SmsMessage("+48601234567", "Hello")).provider_id == "gw-1"


def test_a_redirect_is_not_followed(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    gateway.replies.append(Reply(302, "", {"Location": "https://elsewhere.example/sms"}))
    with pytest.raises(sms.SmsPermanentError) as refused:
        send(app, sms.SmsMessage("+48601234567", "Hello"))
    assert refused.value.status == 302 and len(gateway.requests) == 1


def test_an_answer_without_the_id_field_still_counts_as_sent(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    gateway.replies.append(Reply(202, "Accepted", content_type="text/plain"))
    result = send(app, sms.SmsMessage("+48601234567", "Hello"))
    assert (result.status, result.provider_id) == (202, None)


def test_a_bad_number_is_refused_before_any_request(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    with pytest.raises(sms.SmsRefused):
        send(app, sms.SmsMessage("22 123 45 67", "Hello"))
    assert gateway.requests == []


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"CRM_SMS_URL": "http://sms.example.eu/send"}, "must be https://"),
        ({"CRM_SMS_URL": "ftp://sms.example.eu/send"}, "must be an https:// address"),
        ({"CRM_SMS_BODY_TEMPLATE": '{"to": "{to}", "text": "{message}"}'}, "{message}"),
        ({"CRM_SMS_BODY_TEMPLATE": '{"to": "{to}"}'}, "must contain {body}"),
        ({"CRM_SMS_BODY_TEMPLATE": '{"to": "{to}", "text": {body}}'}, "not valid JSON"),
        ({"CRM_SMS_BODY_TEMPLATE": "to={to}&text={body"}, "a lone '{'"),
        ({"CRM_SMS_BODY_TEMPLATE": "to={to}&{body}"}, "name=value"),
        ({"CRM_SMS_AUTH_HEADER": "Bearer abc"}, "'Name: value'"),
        ({"CRM_SMS_AUTH_HEADER": "X-API-Key: klucz-żółw"}, "ASCII"),
    ],
)
def test_bad_settings_are_named(app, monkeypatch, gateway, settings, says):
    use_gateway(app, monkeypatch, gateway, **settings)
    with pytest.raises(sms.SmsConfigError) as wrong:
        send(app, sms.SmsMessage("+48601234567", "Hello"))
    assert says in str(wrong.value) and KEY not in str(wrong.value)
    assert gateway.requests == []


def test_the_gateway_repr_hides_the_key(gateway):
    adapter = sms.HttpGateway(f"{gateway.url}/sms?apikey={KEY}", auth_header=f"X-API-Key: {KEY}")
    assert KEY not in repr(adapter) and KEY not in adapter.where


# --- the operator command --------------------------------------------------------------


def test_sms_test_writes_to_the_outbox_without_a_gateway(app, outbox):
    result = app.test_cli_runner().invoke(args=["sms", "test", "601 234 567"])
    assert result.exit_code == 0, result.output
    assert "Backend: outbox" in result.output
    assert "To: +48 601 234 567 (+48601234567)" in result.output
    assert "Written to" in result.output
    [path] = outbox.glob("*.sms.json")
    assert "a test message from the CRM" in json.loads(path.read_text(encoding="utf-8"))["body"]


def test_sms_test_through_the_gateway(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway, CRM_SMS_RETRY_SECONDS=0)
    gateway.replies.append(Reply(503, "busy"))
    result = app.test_cli_runner().invoke(
        args=["sms", "test", "+420 601 123 456", "--text", "Zkouška: Dvořák", "--sender", "Brno"]
    )
    assert result.exit_code == 0, result.output
    assert "header X-API-Key: ***" in result.output and KEY not in result.output
    assert "account=7" not in result.output  # the query may hold a key too
    assert "UCS-2, 1 SMS" in result.output
    assert "Sent: HTTP 200 after 2 attempt(s), gateway id gw-1" in result.output
    assert json.loads(gateway.requests[-1].body)["text"] == "Zkouška: Dvořák"


def test_sms_test_prints_the_error(app, monkeypatch, gateway):
    use_gateway(app, monkeypatch, gateway)
    gateway.replies.append(Reply(401, '{"error": "bad key"}'))
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["sms", "test", "+48601234567"])
    assert refused.exit_code == 1
    assert "refused the message: HTTP 401" in refused.output and "bad key" in refused.output
    bad_number = runner.invoke(args=["sms", "test", "22 123 45 67"])
    assert bad_number.exit_code == 1 and "landline" in bad_number.output
    assert len(gateway.requests) == 1
