"""``create_app(config)``: builds the per-process parts once (rules, terminology, engine,
audit store, JWT verifier) and wires them to the web layer (``cds_hooks.web``: state, CORS,
authentication, error answers, health and metrics) and the route blueprints."""

from __future__ import annotations

import logging

from flask import Flask

from .audit.store import AuditStore
from .audit_api import bp as audit_bp
from .auth import JwtVerifier, load_issuers
from .config import Config, from_env
from .console import register_console
from .gc_tuning import COLLECTOR_PAUSE, tune_for_serving
from .nagging import FeedbackMemory
from .pipeline_factory import build_pipeline
from .prefetch import prefetch_templates
from .replay import DatabaseJtiCache
from .routes import bp
from .rulepage import bp as rules_bp
from .state import open_audit_store
from .web import health, metrics_api
from .web.auth_hook import install_authentication
from .web.cors import install_cors
from .web.errors import install_error_handlers
from .web.logsafe import install_request_log_filter
from .web.memory import install_memory_release
from .web.state import ServiceState, install_state
from .web.worker_memory import WorkerReplacement

log = logging.getLogger(__name__)


def _verifier(config: Config, store: AuditStore) -> JwtVerifier | None:
    if not config.auth_required:
        log.warning("JWT authentication is DISABLED (CDS_HOOKS_AUTH=off): development use only")
        return None
    issuers = load_issuers(config.trusted_issuers) if config.trusted_issuers else []
    if not issuers:
        log.warning("no trusted JWT issuers configured: every call will be refused (401)")
    return JwtVerifier(
        issuers,
        clock_skew_s=config.jwt_clock_skew_s,
        tenants=config.tenants or None,
        jti_cache=DatabaseJtiCache(store, run=store.run_bounded),
    )


def create_app(config: Config | None = None) -> Flask:
    config = config or from_env()

    # -- pipeline ---------------------------------------------------------------------
    pipeline = build_pipeline(config)

    # -- stores and state -------------------------------------------------------------
    store = open_audit_store(config)
    pipeline.attach_feedback_memory(FeedbackMemory(store))  # no nagging twice (issue 14)
    state = ServiceState(config, pipeline, store, _verifier(config, store), prefetch_templates(pipeline.terminology))

    # -- web layer --------------------------------------------------------------------
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    install_state(app, state)
    install_cors(app, config.cors_origins)
    install_authentication(app, state)
    install_error_handlers(app)
    install_request_log_filter()
    install_memory_release(
        app, replacement=WorkerReplacement(config.worker_max_growth_mb), idle_s=config.memory_release_idle_s
    )

    # -- blueprints -------------------------------------------------------------------
    app.register_blueprint(bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(rules_bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_api.bp)
    register_console(app)
    tune_for_serving()
    app.wsgi_app = COLLECTOR_PAUSE.wrap(app.wsgi_app)  # type: ignore[method-assign,assignment]

    log.info(
        "cryo-cds ready: %d rules (revision %s), evaluator %s",
        len(pipeline.rulebook.rules),
        pipeline.rulebook.revision,
        pipeline.evaluator.name,
    )
    return app
