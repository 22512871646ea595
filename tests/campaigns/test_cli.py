"""`flask campaigns create|send|status`."""

from __future__ import annotations

import re

from tests.campaigns.conftest import make_list, subscribed_clients


def test_create_send_and_status(app, smtp, tmp_path):
    with app.app_context():
        mlist = make_list("Nowinki")
        subscribed_clients(mlist, 3)
    body = tmp_path / "body.md"
    body.write_text("Dzień dobry {{ first_name }}, zapraszamy do Łodzi!", encoding="utf-8")
    runner = app.test_cli_runner()
    created = runner.invoke(
        args=[
            "campaigns",
            "create",
            "--list",
            "nowinki",
            "--subject",
            "Łódź czeka",
            "--body-file",
            str(body),
            "--sender",
            "Salon <biuro@example.pl>",
        ]
    )
    assert created.exit_code == 0, created.output
    campaign_id = re.search(r"campaign (\d+)", created.output).group(1)
    sent = runner.invoke(args=["campaigns", "send", campaign_id, "--wait"])
    assert sent.exit_code == 0, sent.output
    assert "to 3 recipients" in sent.output
    assert len(smtp.messages) == 3
    status = runner.invoke(args=["campaigns", "status", campaign_id])
    assert "done; 3 recipients, 3 sent" in status.output
    again = runner.invoke(args=["campaigns", "send", campaign_id])
    assert again.exit_code != 0 and "already being sent" in again.output


def test_bad_input_is_an_error_message(app, smtp, tmp_path):
    body = tmp_path / "body.md"
    body.write_text("Hej {{ nieznane }}", encoding="utf-8")
    runner = app.test_cli_runner()
    with app.app_context():
        make_list("Lista")
    unknown = runner.invoke(
        args=["campaigns", "create", "--list", "Nie ma", "--subject", "S", "--body-file", str(body)]
    )
    assert unknown.exit_code != 0 and "No list named" in unknown.output
    bad = runner.invoke(
        args=["campaigns", "create", "--list", "Lista", "--subject", "S", "--body-file", str(body)]
    )
    assert bad.exit_code != 0 and "nieznane" in bad.output
    missing = runner.invoke(args=["campaigns", "status", "424242"])
    assert missing.exit_code != 0 and "No campaign" in missing.output
