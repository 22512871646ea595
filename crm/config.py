"""Settings read from CRM_* environment variables.

Every setting has a default that runs the embedded mode: SQLite under instance/,
Dramatiq workers as threads in the web process, email written to instance/outbox/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a whole number, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Settings:
    """Everything the app reads from the environment, resolved once at start-up."""

    instance_path: Path
    secret_key: str | None = None
    database_url: str | None = None
    broker_url: str | None = None
    smtp_url: str | None = None
    base_url: str = "http://127.0.0.1:5000"
    trusted_proxies: list[str] = field(default_factory=list)
    upload_dir: Path | None = None
    # Data exports of one client (zip files) until they expire; see crm.privacy.export.
    export_dir: Path | None = None
    export_days: int = 7
    max_upload_mb: int = 20
    mail_from: str = "CRM <crm@localhost>"
    secure_cookies: bool = False
    embedded_workers: bool = True
    idle_timeout_minutes: int = 15
    # Campaign messages per second over all workers (0: unlimited).
    mail_rate: float = 0.0
    # Campaign sending: recipients per claimed batch, seconds before a claim of a silent
    # worker is given back, first retry delay (doubling), attempts before failing.
    campaign_batch_size: int = 100
    campaign_claim_timeout: int = 600
    campaign_retry_seconds: int = 60
    campaign_max_attempts: int = 5
    # SMS (crm.sms): no URL writes them to the outbox; see the README's "SMS" section.
    sms_url: str | None = None
    sms_auth_header: str | None = None
    sms_body_template: str | None = None
    sms_sender: str | None = None
    sms_timeout: float = 10.0
    sms_attempts: int = 3
    sms_retry_seconds: float = 1.0
    sms_id_field: str | None = None
    sms_error_field: str | None = None
    sms_max_segments: int = 3
    # Public pages' rate limits (booking): memory:// per process by default; a
    # redis:// URL shares the counts between processes.
    ratelimit_storage: str = "memory://"

    @classmethod
    def from_env(cls, instance_path: Path) -> Settings:
        proxies = _env("CRM_TRUSTED_PROXIES", "") or ""
        upload = _env("CRM_UPLOAD_DIR")
        exports = _env("CRM_EXPORT_DIR")
        base_url = _env("CRM_BASE_URL", "http://127.0.0.1:5000") or ""
        return cls(
            instance_path=instance_path,
            secret_key=_env("CRM_SECRET_KEY"),
            database_url=_env("CRM_DATABASE_URL"),
            broker_url=_env("CRM_BROKER_URL"),
            smtp_url=_env("CRM_SMTP_URL"),
            base_url=base_url.rstrip("/"),
            trusted_proxies=[p.strip() for p in proxies.split(",") if p.strip()],
            upload_dir=Path(upload) if upload else None,
            export_dir=Path(exports) if exports else None,
            export_days=_env_int("CRM_EXPORT_DAYS", 7),
            max_upload_mb=_env_int("CRM_MAX_UPLOAD_MB", 20),
            mail_from=_env("CRM_MAIL_FROM", "CRM <crm@localhost>") or "",
            secure_cookies=_env_bool("CRM_SECURE_COOKIES", base_url.startswith("https://")),
            embedded_workers=_env_bool("CRM_EMBEDDED_WORKERS", True),
            idle_timeout_minutes=_env_int("CRM_IDLE_TIMEOUT_MINUTES", 15),
            mail_rate=_env_float("CRM_MAIL_RATE", 0.0),
            campaign_batch_size=_env_int("CRM_CAMPAIGN_BATCH_SIZE", 100),
            campaign_claim_timeout=_env_int("CRM_CAMPAIGN_CLAIM_TIMEOUT", 600),
            campaign_retry_seconds=_env_int("CRM_CAMPAIGN_RETRY_SECONDS", 60),
            campaign_max_attempts=_env_int("CRM_CAMPAIGN_MAX_ATTEMPTS", 5),
            sms_url=_env("CRM_SMS_URL"),
            sms_auth_header=_env("CRM_SMS_AUTH_HEADER"),
            sms_body_template=_env("CRM_SMS_BODY_TEMPLATE"),
            sms_sender=_env("CRM_SMS_SENDER"),
            sms_timeout=_env_float("CRM_SMS_TIMEOUT", 10.0),
            sms_attempts=_env_int("CRM_SMS_ATTEMPTS", 3),
            sms_retry_seconds=_env_float("CRM_SMS_RETRY_SECONDS", 1.0),
            sms_id_field=_env("CRM_SMS_ID_FIELD"),
            sms_error_field=_env("CRM_SMS_ERROR_FIELD"),
            sms_max_segments=_env_int("CRM_SMS_MAX_SEGMENTS", 3),
            ratelimit_storage=_env("CRM_RATELIMIT_STORAGE", "memory://") or "memory://",
        )

    def flask_config(self) -> dict[str, Any]:
        """The Flask config keys derived from these settings."""
        db_url = self.database_url or f"sqlite:///{self.instance_path / 'crm.sqlite3'}"
        return {
            "SECRET_KEY": self.secret_key or _instance_secret(self.instance_path),
            "SQLALCHEMY_DATABASE_URI": normalise_database_url(db_url),
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options(db_url),
            "CRM_BROKER_URL": self.broker_url,
            "CRM_SMTP_URL": self.smtp_url,
            "CRM_BASE_URL": self.base_url,
            "CRM_TRUSTED_PROXIES": self.trusted_proxies,
            "CRM_UPLOAD_DIR": str(self.upload_dir or self.instance_path / "uploads"),
            "CRM_OUTBOX_DIR": str(self.instance_path / "outbox"),
            "CRM_EXPORT_DIR": str(self.export_dir or self.instance_path / "exports"),
            "CRM_EXPORT_DAYS": max(1, self.export_days),
            "CRM_MAIL_FROM": self.mail_from,
            "CRM_EMBEDDED_WORKERS": self.embedded_workers,
            "CRM_IDLE_TIMEOUT_SECONDS": max(1, self.idle_timeout_minutes) * 60,
            "CRM_MAIL_RATE": self.mail_rate,
            "CRM_CAMPAIGN_BATCH_SIZE": max(1, self.campaign_batch_size),
            "CRM_CAMPAIGN_CLAIM_TIMEOUT": max(1, self.campaign_claim_timeout),
            "CRM_CAMPAIGN_RETRY_SECONDS": max(0, self.campaign_retry_seconds),
            "CRM_CAMPAIGN_MAX_ATTEMPTS": max(1, self.campaign_max_attempts),
            "CRM_SMS_URL": self.sms_url,
            "CRM_SMS_AUTH_HEADER": self.sms_auth_header,
            "CRM_SMS_BODY_TEMPLATE": self.sms_body_template,
            "CRM_SMS_SENDER": self.sms_sender,
            "CRM_SMS_TIMEOUT": self.sms_timeout if self.sms_timeout > 0 else 10.0,
            "CRM_SMS_ATTEMPTS": max(1, self.sms_attempts),
            "CRM_SMS_RETRY_SECONDS": max(0.0, self.sms_retry_seconds),
            "CRM_SMS_ID_FIELD": self.sms_id_field,
            "CRM_SMS_ERROR_FIELD": self.sms_error_field,
            "CRM_SMS_MAX_SEGMENTS": max(1, self.sms_max_segments),
            "RATELIMIT_STORAGE_URI": self.ratelimit_storage,
            "RATELIMIT_HEADERS_ENABLED": True,
            "MAX_CONTENT_LENGTH": self.max_upload_mb * 1024 * 1024,
            "CRM_MAX_UPLOAD_BYTES": self.max_upload_mb * 1024 * 1024,
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            "SESSION_COOKIE_SECURE": self.secure_cookies,
            "REMEMBER_COOKIE_SECURE": self.secure_cookies,
            "REMEMBER_COOKIE_HTTPONLY": True,
            "WTF_CSRF_TIME_LIMIT": None,
            "BABEL_DEFAULT_LOCALE": "en",
            "BABEL_DEFAULT_TIMEZONE": "UTC",
        }


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Busy timeout so concurrent writers wait instead of failing at once.
        return {"connect_args": {"timeout": 15}}
    return {"pool_pre_ping": True}


def _instance_secret(instance_path: Path) -> str:
    """A random key generated once per installation and kept in instance/.

    Never a fixed default: two installations must not share a session key.
    """
    import secrets

    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    path.write_text(key)
    path.chmod(0o600)
    return key
