"""Password rules: length in characters, the common-password list (ignoring case),
nothing made of the account's own name or email, no trivial patterns, no composition
rules; create_user and `flask users create` apply them."""

from __future__ import annotations

import pytest

from crm.auth.passwords import MAX_LENGTH, common_passwords, password_problem
from crm.auth.services import AccountError, create_user
from tests.conftest import TEST_PASSWORD


def test_length_counts_characters_not_bytes():
    assert password_problem("zażółć gęśl") == "Use at least 12 characters."  # 11 chars, 17 bytes
    assert password_problem("zażółć gęślą") is None  # 12 characters
    assert password_problem("x" * 5 + "jaźń-" * 51) == f"Use at most {MAX_LENGTH} characters."


@pytest.mark.parametrize(
    "password",
    ["Password123456", "PASSWORD123456", "Iloveyousomuch", "Zaq12WSXcde3", "KochamCie1234"],
)
def test_common_passwords_are_refused_whatever_the_case(password):
    assert password_problem(password) == (
        "This password is too common; choose something harder to guess."
    )


def test_a_common_word_with_digits_or_symbols_appended_is_still_common():
    for password in ["Sunshine2024!!", "FussBall!2024", "monkey-98765432"]:
        assert "too common" in (password_problem(password) or ""), password


def test_the_bundled_list_is_large_lowercase_and_loaded_once():
    words = common_passwords()
    assert len(words) > 3000
    assert all(word == word.lower() for word in words)
    assert common_passwords() is words
    assert "password123456" in words and "1qaz2wsx3edc" in words


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaa",
        "123456789012",
        "abcabcabcabc",
        "098765432109",
        "zzzzzzzzzzzzzzzz",
        "1212121212121",
    ],
)
def test_repetitions_and_runs_are_refused(password):
    assert "simple pattern" in (password_problem(password) or "")


def test_the_account_email_or_name_is_refused():
    email = "magdalena.wisniewska@example.pl"
    problem = "Do not use your name or email address as the password."
    assert password_problem("Magdalena.Wisniewska@example.pl", email=email) == problem
    assert password_problem("magdalena.wisniewska", email=email) == problem
    assert password_problem("Jan Dvořák Nový", name="Jan Dvořák Nový") == problem
    assert password_problem("JanDvořákNový2024!", name="Jan Dvořák Nový") == problem
    # Someone else's name is fine, and so is a longer phrase that contains the name.
    assert password_problem("Jan Dvořák Nový", name="Eva Svobodová") is None
    assert password_problem("magdalena likes green tea", email=email) is None


def test_no_composition_rules():
    for password in [TEST_PASSWORD, "ogórki kiszone na zimę", "lange gelbe Straßenbahn"]:
        assert password_problem(password) is None, password


def test_create_user_applies_the_rules(app, ctx):
    with pytest.raises(AccountError, match="too common"):
        create_user("ola@example.com", "Welcome12345", "sales")
    with pytest.raises(AccountError, match="name or email"):
        create_user("aleksandra.nowak@example.com", "Aleksandra Nowak", "sales", "Aleksandra Nowak")
    user = create_user("ola@example.com", TEST_PASSWORD, "sales")
    assert user.password_changed_at is not None


def test_cli_refuses_a_common_password_with_the_reason(app):
    result = app.test_cli_runner().invoke(
        args=["users", "create", "szef@example.com", "--password-stdin"], input="qwertyuiop123\n"
    )
    assert result.exit_code != 0
    assert "too common" in result.output or "simple pattern" in result.output
