"""The CRM application factory."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from flask import Flask, has_request_context, request

from crm.config import Settings
from crm.extensions import babel, csrf, db, htmx, limiter, login_manager, migrate
from crm.sqltypes import use_hinting_compiler

LANGUAGES = ["en", "pl", "de", "cs"]


def settle_heap() -> None:
    """Take what start-up built (modules, the app, compiled templates) out of the cyclic
    garbage collector's walks. A full collection walks every tracked object, and with
    the start-up heap it took ~70 ms, every few slot computations (they make thousands
    of short-lived objects): the p95 of a page. Called by long-running processes once
    they are set up, before serving."""
    gc.collect()
    gc.freeze()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    instance_path = Path(os.environ.get("CRM_INSTANCE_PATH") or Path.cwd() / "instance")
    app = Flask(__name__, instance_path=str(instance_path.resolve()))
    settings = Settings.from_env(Path(app.instance_path))
    app.config.update(settings.flask_config())
    if config:
        app.config.update(config)

    _init_extensions(app)
    _register_blueprints(app)
    _register_request_hooks(app)
    _register_cli(app)

    from crm.web import templating
    from crm.web.errors import register_error_handlers

    templating.init_app(app)
    register_error_handlers(app)
    return app


def _init_extensions(app: Flask) -> None:
    from crm import queue

    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            use_hinting_compiler(engine)
    migrate.init_app(app, db, directory=str(Path(__file__).parent.parent / "migrations"))
    csrf.init_app(app)
    htmx.init_app(app)
    babel.init_app(app, locale_selector=_select_locale, timezone_selector=_select_timezone)
    login_manager.init_app(app)
    limiter.init_app(app)
    queue.init_app(app)
    _import_models()


def _import_models() -> None:
    """Every model module, so metadata (and Alembic autogenerate) sees all tables."""
    import crm.appointments.models
    import crm.attachments.models
    import crm.audit.models
    import crm.auth.models
    import crm.campaigns.models
    import crm.clients.models
    import crm.consents.models
    import crm.deals.models
    import crm.fields.models
    import crm.mailing.models
    import crm.notes.models
    import crm.org.models
    import crm.privacy.models
    import crm.scheduler.models
    import crm.search.models
    import crm.security.models
    import crm.tasks.models
    import crm.users.models  # noqa: F401


def _register_blueprints(app: Flask) -> None:
    from crm.appointments.views import bp as appointments_bp
    from crm.attachments.views import bp as attachments_bp
    from crm.audit.views import bp as audit_bp
    from crm.auth.views import bp as auth_bp
    from crm.booking.views import bp as booking_bp
    from crm.campaigns.views import bp as campaigns_bp
    from crm.clients.views import bp as clients_bp
    from crm.consents.views import bp as consents_bp
    from crm.deals.views import bp as deals_bp
    from crm.fields.views import bp as fields_bp
    from crm.mailing.views import bp as mailing_bp
    from crm.notes.views import bp as notes_bp
    from crm.org.views import bp as org_bp
    from crm.privacy.views import bp as privacy_bp
    from crm.search.views import bp as search_bp
    from crm.security.views import bp as security_bp
    from crm.tasks.views import bp as tasks_bp
    from crm.users.views import bp as users_bp
    from crm.web.views import bp as web_bp

    for blueprint in (
        web_bp,
        auth_bp,
        clients_bp,
        search_bp,
        fields_bp,
        notes_bp,
        attachments_bp,
        tasks_bp,
        deals_bp,
        appointments_bp,
        booking_bp,
        consents_bp,
        mailing_bp,
        org_bp,
        privacy_bp,
        audit_bp,
        campaigns_bp,
        security_bp,
        users_bp,
    ):
        app.register_blueprint(blueprint)


def _register_request_hooks(app: Flask) -> None:
    from crm.auth.idle import enforce_idle_lock
    from crm.security.views import enforce_network
    from crm.web.access import enforce_access
    from crm.web.security import apply_security_headers

    app.before_request(enforce_access)
    # After enforce_access: a signed-in user outside the IP allow-list is signed out.
    app.before_request(enforce_network)
    # Last: only a signed-in user on an allowed network gets as far as the idle check.
    app.before_request(enforce_idle_lock)
    app.after_request(apply_security_headers)


def _register_cli(app: Flask) -> None:
    from crm.appointments.cli import appointments_cli
    from crm.audit.cli import audit_cli
    from crm.auth.cli import users_cli
    from crm.campaigns.cli import campaigns_cli
    from crm.cli import bootstrap_command, demo_command, serve_command
    from crm.consents.cli import consents_cli
    from crm.fields.cli import fields_cli
    from crm.mailing.cli import import_cli
    from crm.privacy.cli import erase_cli, export_cli
    from crm.scheduler.cli import jobs_cli
    from crm.security.cli import allowlist_cli
    from crm.sms_cli import sms_cli

    app.cli.add_command(users_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(appointments_cli)
    app.cli.add_command(campaigns_cli)
    app.cli.add_command(fields_cli)
    app.cli.add_command(allowlist_cli)
    app.cli.add_command(sms_cli)
    app.cli.add_command(consents_cli)
    app.cli.add_command(import_cli)
    app.cli.add_command(jobs_cli)
    app.cli.add_command(export_cli)
    app.cli.add_command(erase_cli)
    app.cli.add_command(demo_command)
    app.cli.add_command(serve_command)
    app.cli.add_command(bootstrap_command)


def _select_locale() -> str | None:
    from flask_login import current_user

    if not has_request_context():
        return None  # CLI commands: the default locale (actors use force_locale)
    if current_user and current_user.is_authenticated and current_user.locale:
        return current_user.locale
    return request.accept_languages.best_match(LANGUAGES) or "en"


def _select_timezone() -> str:
    from crm.org.services import organisation

    return organisation().timezone
