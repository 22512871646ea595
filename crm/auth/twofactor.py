"""TOTP two-factor authentication (RFC 6238) and one-time recovery codes.

Codes have 6 digits, a 30-second step and HMAC-SHA-1, which is what authenticator apps
assume when the provisioning URI says nothing else. A code of the step before or after
the current one is accepted (clock drift). The step of the last accepted code is kept
in `users.totp_last_step` and every code of that step or an earlier one is refused, so
a code cannot be used twice, not even by two requests racing each other (the update is
conditional in SQL). Recovery codes are stored as argon2 hashes and burnt on use.

Services change state and flush; the caller commits. Every function that depends on
the time takes `now` (Unix seconds) so tests can pin it; the default is `clock()`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata

import pyotp
import segno
from sqlalchemy import delete, func, or_, select, update

from crm.auth.models import RecoveryCode, User
from crm.auth.passwords import hash_password, verify_password
from crm.auth.services import revoke_sessions
from crm.extensions import db
from crm.sqltypes import utcnow

DIGITS = 6
INTERVAL = 30  # seconds per time step
DRIFT_STEPS = 1  # steps accepted either side of the current one
RECOVERY_CODE_COUNT = 10
# No 0/o, 1/l/i: a code read off paper is typed back without guessing.
RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
RECOVERY_GROUP = 4  # two groups of four: "k7m2-9xq4"

METHOD_TOTP = "totp"
METHOD_RECOVERY = "recovery_code"

_SEPARATORS = re.compile(r"[\s\-]+")


def clock() -> float:
    """The current Unix time; tests replace it to pin the time step."""
    return time.time()


# --- secrets, URIs, QR -------------------------------------------------------------


def new_secret() -> str:
    """A random base32 secret of 160 bits (the HMAC-SHA-1 block the RFC recommends)."""
    return pyotp.random_base32(length=32)


def grouped(secret: str) -> str:
    """The secret in groups of four, for typing it into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=email, issuer_name=issuer
    )


def qr_data_uri(uri: str) -> str:
    """The QR code of `uri` as an SVG data: URI, for an <img> (the CSP allows data:
    images and no inline script or style)."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def fingerprint(secret: str | None) -> str:
    """A short hash naming one secret, e.g. in the session, without revealing it."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:16]


# --- codes ---------------------------------------------------------------------------


def normalise(code: str) -> str:
    """What was typed without spaces and dashes, lower-cased; NFKC turns full-width
    digits and letters (typed with an East Asian input method) into ASCII."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", code or "")).lower()


def _is_totp_shaped(value: str) -> bool:
    return len(value) == DIGITS and value.isascii() and value.isdigit()


def looks_like_totp(code: str) -> bool:
    return _is_totp_shaped(normalise(code))


def looks_like_recovery_code(code: str) -> bool:
    value = normalise(code)
    return len(value) == 2 * RECOVERY_GROUP and all(c in RECOVERY_ALPHABET for c in value)


def time_step(now: float) -> int:
    return int(now) // INTERVAL


def match_step(
    secret: str, code: str, now: float | None = None, after_step: int | None = None
) -> int | None:
    """The time step whose code is `code` (current one first, then one either side), or
    None. Steps at or before `after_step` are not considered (replay refusal)."""
    value = normalise(code)
    if not secret or not _is_totp_shaped(value):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    current = time_step(clock() if now is None else now)
    drift = [current + d for k in range(1, DRIFT_STEPS + 1) for d in (-k, k)]
    for step in [current, *drift]:
        if step < 0 or (after_step is not None and step <= after_step):
            continue
        # Constant-time comparison: the code is a secret until it is used.
        if hmac.compare_digest(totp.generate_otp(step), value):
            return step
    return None


# --- state of a user ---------------------------------------------------------------


def is_enabled(user: User) -> bool:
    return user.totp_enabled_at is not None and bool(user.totp_secret)


def needs_enrolment(user: User) -> bool:
    """The role demands 2FA and the user has not set it up yet."""
    return bool(user.role is not None and user.role.require_2fa) and not is_enabled(user)


def remaining_recovery_codes(user: User) -> int:
    return (
        db.session.scalar(
            select(func.count(RecoveryCode.id)).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        )
        or 0
    )


# --- enrolment -------------------------------------------------------------------------


def begin_enrolment(user: User) -> str:
    """Give a user who has no working 2FA a fresh, not yet confirmed secret."""
    if is_enabled(user):
        raise ValueError("two-factor authentication is on already")
    user.totp_secret = new_secret()
    user.totp_last_step = None
    db.session.flush()
    return user.totp_secret


def confirm_enrolment(user: User, code: str, now: float | None = None) -> list[str] | None:
    """Turn 2FA on when `code` belongs to the pending secret; returns the new recovery
    codes (plain text, to be shown once), or None for a wrong code.

    Every other session of the user is signed out (a 2FA change revokes sessions); the
    caller signs the current one in again."""
    if is_enabled(user) or not user.totp_secret:
        return None
    step = match_step(user.totp_secret, code, now)
    if step is None:
        return None
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    codes = replace_recovery_codes(user)
    revoke_sessions(user)
    db.session.flush()
    return codes


# --- verification ------------------------------------------------------------------------


def verify_totp(user: User, code: str, now: float | None = None) -> bool:
    """Accept a code of an enabled user once: its step becomes the last accepted one."""
    if not is_enabled(user):
        return False
    step = match_step(user.totp_secret or "", code, now, after_step=user.totp_last_step)
    if step is None:
        return False
    # Conditional update: of two requests with the same code, only one moves the step.
    result = db.session.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    db.session.expire(user, ["totp_last_step"])
    return True


def use_recovery_code(user: User, code: str) -> bool:
    """Accept one unused recovery code of an enabled user, and burn it."""
    if not is_enabled(user) or not looks_like_recovery_code(code):
        return False
    value = normalise(code)
    unused = db.session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).all()
    for row in unused:
        if verify_password(row.code_hash, value):
            # Conditional, like the TOTP step: a code is burnt by one request only.
            result = db.session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            db.session.expire(row, ["used_at"])
            return result.rowcount == 1
    return False


def verify_second_factor(user: User, code: str, now: float | None = None) -> str | None:
    """METHOD_TOTP or METHOD_RECOVERY when `code` is accepted (one field takes both),
    else None."""
    if looks_like_totp(code):
        return METHOD_TOTP if verify_totp(user, code, now) else None
    if looks_like_recovery_code(code):
        return METHOD_RECOVERY if use_recovery_code(user, code) else None
    return None


# --- recovery codes --------------------------------------------------------------------


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(2 * RECOVERY_GROUP))
    return f"{raw[:RECOVERY_GROUP]}-{raw[RECOVERY_GROUP:]}"


def replace_recovery_codes(user: User) -> list[str]:
    """Delete the user's recovery codes and store RECOVERY_CODE_COUNT new ones (hashed);
    returns them in plain text, the only time they exist as such."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes: list[str] = []
    while len(codes) < RECOVERY_CODE_COUNT:
        code = new_recovery_code()
        if code not in codes:
            codes.append(code)
    db.session.add_all(
        RecoveryCode(user_id=user.id, code_hash=hash_password(normalise(code))) for code in codes
    )
    db.session.flush()
    return codes


# --- turning it off ---------------------------------------------------------------------


def disable(user: User) -> int:
    """Turn 2FA off: clear the secret, its state and the recovery codes, and sign the
    user out everywhere. Returns how many unused recovery codes were removed."""
    removed = remaining_recovery_codes(user)
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    revoke_sessions(user)
    db.session.flush()
    return removed
