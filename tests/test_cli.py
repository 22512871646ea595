from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from crm.auth.models import User
from crm.clients.models import Client
from crm.extensions import db
from crm.fields.models import CustomField
from crm.notes.models import Note


def test_users_create_reads_the_password_from_stdin(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "Szef@Example.com", "--role", "admin", "--password-stdin"],
        input="długie hasło żółw 123\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created szef@example.com with role admin." in result.output
    with app.app_context():
        user = db.session.scalar(select(User))
        assert user.email == "szef@example.com" and user.role.name == "admin"


def test_users_create_refuses_bad_input_with_a_message(app):
    runner = app.test_cli_runner()
    short = runner.invoke(
        args=["users", "create", "a@example.com", "--password-stdin"], input="krótkie\n"
    )
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    role = runner.invoke(
        args=["users", "create", "a@example.com", "--role", "boss", "--password-stdin"],
        input="długie hasło żółw 123\n",
    )
    assert role.exit_code != 0 and "no role named 'boss'" in role.output


def test_demo_fills_realistic_data(app):
    result = app.test_cli_runner().invoke(args=["demo", "--clients", "120"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 120
        assert db.session.scalar(select(func.count()).select_from(CustomField)) >= 5
        assert db.session.scalar(select(func.count()).select_from(Note)) > 0
        names = " ".join(db.session.scalars(select(Client.last_name)))
        assert any(ch in names for ch in "łśżźćńęąöüßřčšěůý")


def test_bootstrap_creates_the_first_admin_once(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["bootstrap", "--demo-clients", "20"])
    assert first.exit_code == 0, first.output
    assert "admin@example.com" in first.output and "password:" in first.output
    note = Path(app.instance_path) / "first-admin.txt"
    assert note.stat().st_mode & 0o777 == 0o600
    password = note.read_text().split("password: ")[1].strip()
    assert len(password) >= 12
    second = runner.invoke(args=["bootstrap"])
    assert second.exit_code == 0
    assert "First run" not in second.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
    note.unlink()
