"""Password hashing (argon2id) and the rules a new password must meet.

The rules follow current guidance (NIST SP 800-63B): a minimum length, a list of
common passwords, nothing derived from the account itself, and no composition rules
(forcing a digit and a symbol only produces "Password1!").
"""

from __future__ import annotations

import re
import secrets
import threading
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_babel import gettext as _

_hasher = PasswordHasher()

MIN_LENGTH = 12
MAX_LENGTH = 256
# A password hash starting with this can never verify: invited users who have not
# chosen a password yet have one.
UNUSABLE_PREFIX = "!"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    if password_hash.startswith(UNUSABLE_PREFIX):
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def unusable_password() -> str:
    """A stored value that no password matches (random, so no two users share it)."""
    return UNUSABLE_PREFIX + secrets.token_hex(16)


def has_usable_password(password_hash: str) -> bool:
    return not password_hash.startswith(UNUSABLE_PREFIX)


# Verified against when the email is unknown, so both paths take the same time.
_dummy_hash: list[str] = []


def dummy_hash() -> str:
    """Computed on first use, not at import: an argon2 hash takes 64 MiB for a moment,
    which would count in the peak memory of every process that imports the app
    (worker processes never check a password)."""
    if not _dummy_hash:
        _dummy_hash.append(hash_password("not-a-real-password-only-for-timing"))
    return _dummy_hash[0]


# --- rules ---------------------------------------------------------------------------

_common: frozenset[str] | None = None
_common_lock = threading.Lock()

# Keyboard rows (US, German, French) and the digit row: a password that is a stretch of
# one of these, forwards or backwards, is a walk along the keyboard.
_KEYBOARD_WALKS = (
    "1234567890",
    "qwertyuiop",
    "qwertzuiop",
    "azertyuiop",
    "asdfghjkl",
    "qsdfghjklm",
    "zxcvbnm",
    "yxcvbnm",
    "wxcvbn",
    "qwertyuiopasdfghjklzxcvbnm",
    "abcdefghijklmnopqrstuvwxyz",
)
_TRAILING_JUNK = re.compile(r"[\W\d_]+$")
_NOT_ALNUM = re.compile(r"[\W_]+")


def common_passwords() -> frozenset[str]:
    """The bundled list (crm/data/common-passwords.txt), read once on first use."""
    global _common
    if _common is None:
        with _common_lock:
            if _common is None:
                text = resources.files("crm").joinpath("data/common-passwords.txt")
                lines = text.read_text(encoding="utf-8").splitlines()
                _common = frozenset(
                    line.strip().lower()
                    for line in lines
                    if line.strip() and not line.startswith("#")
                )
    return _common


def _is_common(lowered: str) -> bool:
    common = common_passwords()
    if lowered in common:
        return True
    # "sunshine2024!" is "sunshine" with the usual decoration at the end.
    base = _TRAILING_JUNK.sub("", lowered)
    return len(base) >= 4 and base in common


def _is_repetitive(lowered: str) -> bool:
    """Few distinct characters, one short chunk repeated, or a keyboard/alphabet walk."""
    if len(set(lowered)) <= 3:
        return True
    length = len(lowered)
    for size in range(1, length // 2 + 1):
        if length % size == 0 and lowered[:size] * (length // size) == lowered:
            return True
    for walk in _KEYBOARD_WALKS:
        # Long enough to wrap round ("123456789012"), forwards and backwards.
        cycle = walk * (length // len(walk) + 2)
        if lowered in cycle or lowered in cycle[::-1]:
            return True
    return False


def _personal_words(email: str, name: str) -> set[str]:
    words = set()
    email = email.strip().lower()
    if email:
        words.add(_NOT_ALNUM.sub("", email))
        local = email.split("@", 1)[0]
        words.add(_NOT_ALNUM.sub("", local))
    if name.strip():
        words.add(_NOT_ALNUM.sub("", name.lower()))
    return {word for word in words if len(word) >= 3}


def password_problem(password: str, *, email: str = "", name: str = "") -> str | None:
    """What is wrong with `password` as a new password (a message), or None if it is fine.

    Length counts characters, not bytes, so "żółw" is four. The common-password check
    ignores case.
    """
    if len(password) < MIN_LENGTH:
        return _("Use at least %(n)s characters.", n=MIN_LENGTH)
    if len(password) > MAX_LENGTH:
        return _("Use at most %(n)s characters.", n=MAX_LENGTH)
    lowered = password.lower()
    if _is_repetitive(lowered):
        return _("This password is a simple pattern; choose something harder to guess.")
    if _is_common(lowered):
        return _("This password is too common; choose something harder to guess.")
    core = _NOT_ALNUM.sub("", lowered)
    personal = _personal_words(email, name)
    if core in personal or _TRAILING_JUNK.sub("", core) in personal:
        return _("Do not use your name or email address as the password.")
    return None
