"""``create_app(config)``: builds the per-process parts once (rules, terminology, engine,
audit store, JWT verifier) and wires them to the web layer (``cds_hooks.web``: state, CORS,
authentication, error answers, health and metrics) and the route blueprints."""

from __future__ import annotations

import logging

from flask import Flask

from .audit.store import AuditStore
from .audit_api import bp as audit_bp
from .auth import JwtVerifier, load_issuers
from .config import Config, from_env, patient_hash_key, spool_dir
from .engine import make_evaluator
from .replay import DatabaseJtiCache
from .routes import bp, prefetch_templates
from .rulebook import load_rulebook
from .service import Pipeline
from .terminology import Terminology
from .web import health, metrics_api
from .web.auth_hook import install_authentication
from .web.cors import install_cors
from .web.errors import install_error_handlers
from .web.logsafe import install_request_log_filter
from .web.state import ServiceState, install_state

log = logging.getLogger(__name__)
OBSERVATION_SETS = ("OBS-BP.panel", "OBS-BP.sbp", "OBS-BP.dbp", "OBS-BP.hr", "OBS-HB.mass", "OBS-HB.molar",
                    "OBS-A1C", "CL-IMMUNO.anc-obs", "CL-PREG.status-obs", "CL-PREG.hcg-tests",
                    "OBS-PREEXAM.ecg-obs", "OBS-PREEXAM.cbc", "OBS-PREEXAM.urine", "OBS-PREEXAM.ice-test")


def observation_codes(terminology: Terminology) -> str:
    """The Observation codes the rules read, as a FHIR token list for the prefetch query."""
    codes = []
    for vs_id in OBSERVATION_SETS:
        for system, code in sorted(terminology[vs_id].exact):
            codes.append(f"{system}|{code}")
    return ",".join(dict.fromkeys(codes))


def _verifier(config: Config, store: AuditStore) -> JwtVerifier | None:
    if not config.auth_required:
        log.warning("JWT authentication is DISABLED (CDS_HOOKS_AUTH=off): development use only")
        return None
    issuers = load_issuers(config.trusted_issuers) if config.trusted_issuers else []
    if not issuers:
        log.warning("no trusted JWT issuers configured: every call will be refused (401)")
    return JwtVerifier(issuers, clock_skew_s=config.jwt_clock_skew_s, tenants=config.tenants or None,
                       jti_cache=DatabaseJtiCache(store.engine, run=store.run_bounded))


def create_app(config: Config | None = None) -> Flask:
    config = config or from_env()

    # -- pipeline ---------------------------------------------------------------------
    terminology = Terminology.load(config.rules_dir / "valuesets")
    rulebook = load_rulebook(config.rules_dir, config.rule_params)
    evaluator = make_evaluator(rulebook.engine_rules(), config.evaluator)
    pipeline = Pipeline(rulebook, terminology, evaluator,
                        destruction_codes_imply_cryo=config.destruction_codes_imply_cryo)

    # -- stores and state -------------------------------------------------------------
    store = AuditStore(config.database_url, patient_hash_key(config), timeout_s=config.db_timeout_s,
                       spool_dir=spool_dir(config))
    store.migrate()
    state = ServiceState(config, pipeline, store, _verifier(config, store),
                         prefetch_templates(observation_codes(terminology)))

    # -- web layer --------------------------------------------------------------------
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    install_state(app, state)
    install_cors(app, config.cors_origins)
    install_authentication(app, state)
    install_error_handlers(app)
    install_request_log_filter()

    # -- blueprints -------------------------------------------------------------------
    app.register_blueprint(bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_api.bp)

    log.info("cryo-cds ready: %d rules (revision %s), evaluator %s", len(rulebook.rules), rulebook.revision,
             evaluator.name)
    return app
