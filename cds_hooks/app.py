"""``create_app(config)``: builds the per-process parts once (rules, terminology, engine,
audit store, JWT verifier) and wires them to the routes, the error handlers, CORS and
the body-size limit."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .audit.store import AuditStore
from .audit_api import bp as audit_bp
from .auth import AuthError, JwtVerifier, load_issuers
from .config import Config, from_env, patient_hash_key
from .console import is_console_path, register_console
from .engine import make_evaluator
from .errors import (
    CdsError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    error_body,
)
from .fhir_client import FhirFetcher
from .hooks import HookRequest
from .replay import DatabaseJtiCache, ReplayStoreUnavailable
from .routes import bp, handle_cds_error, json_response, prefetch_templates
from .rulebook import load_rulebook
from .service import Pipeline
from .terminology import Terminology

log = logging.getLogger(__name__)
OBSERVATION_SETS = ("OBS-BP.panel", "OBS-BP.sbp", "OBS-BP.dbp", "OBS-BP.hr", "OBS-HB.mass", "OBS-HB.molar",
                    "OBS-A1C", "CL-IMMUNO.anc-obs", "CL-PREG.status-obs", "CL-PREG.hcg-tests",
                    "OBS-PREEXAM.ecg-obs", "OBS-PREEXAM.cbc", "OBS-PREEXAM.urine", "OBS-PREEXAM.ice-test")


@dataclass
class ServiceState:
    config: Config
    pipeline: Pipeline
    store: AuditStore
    verifier: JwtVerifier | None
    prefetch: dict[str, str]

    def record_source(self, hook_request: HookRequest) -> FhirFetcher | None:
        """A fetcher for the call's FHIR server, if the client named one."""
        if not hook_request.fhir_server:
            return None
        allowed = self.config.fhir_server_allow
        if allowed and not any(hook_request.fhir_server.startswith(prefix.rstrip("/")) for prefix in allowed):
            log.warning("fhirServer of hook %s is not in CDS_HOOKS_FHIR_SERVER_ALLOW; not fetching",
                        hook_request.hook_instance)
            return None
        return FhirFetcher(hook_request.fhir_server, hook_request.patient_id, self.prefetch,
                           access_token=hook_request.access_token, budget_s=self.config.fetch_budget_s,
                           max_pages=self.config.fetch_max_pages)


def observation_codes(terminology: Terminology) -> str:
    """The Observation codes the rules read, as a FHIR token list for the prefetch query."""
    codes = []
    for vs_id in OBSERVATION_SETS:
        for system, code in sorted(terminology[vs_id].exact):
            codes.append(f"{system}|{code}")
    return ",".join(dict.fromkeys(codes))


def create_app(config: Config | None = None) -> Flask:
    config = config or from_env()
    terminology = Terminology.load(config.rules_dir / "valuesets")
    rulebook = load_rulebook(config.rules_dir, config.rule_params)
    evaluator = make_evaluator(rulebook.engine_rules(), config.evaluator)
    pipeline = Pipeline(rulebook, terminology, evaluator,
                        destruction_codes_imply_cryo=config.destruction_codes_imply_cryo)
    store = AuditStore(config.database_url, patient_hash_key(config))
    store.migrate()
    verifier = None
    if config.auth_required:
        issuers = load_issuers(config.trusted_issuers) if config.trusted_issuers else []
        if not issuers:
            log.warning("no trusted JWT issuers configured: every call will be refused (401)")
        verifier = JwtVerifier(issuers, clock_skew_s=config.jwt_clock_skew_s,
                               tenants=config.tenants or None, jti_cache=DatabaseJtiCache(store.engine))
    else:
        log.warning("JWT authentication is DISABLED (CDS_HOOKS_AUTH=off): development use only")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    state = ServiceState(config, pipeline, store, verifier, prefetch_templates(observation_codes(terminology)))
    app.extensions["cryo_cds"] = state
    app.register_blueprint(bp)
    app.register_blueprint(audit_bp)
    register_console(app)
    _install_security(app, state)
    _install_error_handlers(app)
    log.info("cryo-cds ready: %d rules (revision %s), evaluator %s", len(rulebook.rules), rulebook.revision,
             evaluator.name)
    return app


def _cors_headers(allowed: tuple[str, ...]) -> dict[str, str]:
    """CORS answer to the current request for an allow-listed origin, and Chrome's Private
    Network Access consent so that a public web client (e.g. https://sandbox.cds-hooks.org)
    may call a service on a developer's loopback or LAN address."""
    origin = request.headers.get("Origin")
    if not origin or not allowed:
        return {}
    if "*" in allowed:
        allow = "*"
    elif origin in allowed:
        allow = origin
    else:
        return {}
    headers = {"Access-Control-Allow-Origin": allow, "Vary": "Origin",
               "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
               "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600"}
    if request.headers.get("Access-Control-Request-Private-Network") == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"
    return headers


def _install_security(app: Flask, state: ServiceState) -> None:
    @app.before_request
    def authenticate() -> Response | None:
        if request.method == "OPTIONS":
            headers = _cors_headers(state.config.cors_origins)
            return Response(status=204, headers=headers)
        if (request.path == "/healthz" or request.path.startswith("/audit/") or is_console_path(request.path)
                or state.verifier is None):
            return None
        audience = state.config.public_base_url + request.path
        try:
            g.jwt_claims = state.verifier.verify(request.headers.get("Authorization"), audience)
        except AuthError as exc:
            log.info("refused %s %s: %s", request.method, request.path, exc)
            raise Unauthorized("invalid or missing bearer token") from None
        except ReplayStoreUnavailable:
            raise ServiceUnavailable("token replay protection is unavailable; retry shortly") from None
        return None

    @app.after_request
    def add_cors(response: Response) -> Response:
        response.headers.update(_cors_headers(state.config.cors_origins))
        return response


def _install_error_handlers(app: Flask) -> None:
    app.register_error_handler(CdsError, handle_cds_error)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: Exception) -> Response:
        return handle_cds_error(PayloadTooLarge(
            f"The request body is larger than the configured limit of {app.config['MAX_CONTENT_LENGTH']} bytes"))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.code == 404:
            return handle_cds_error(NotFound(f"No endpoint at {request.path}; GET /cds-services lists the services"))
        if error.code == 405:
            return handle_cds_error(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
        wrapped = CdsError(error.description or error.name)
        wrapped.status = error.code or 400
        return json_response(error_body(wrapped), wrapped.status)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        failure = CdsError("The service failed to process this request; it has been logged")
        failure.status, failure.code, failure.issue_code = 500, "internal-error", "exception"
        return json_response(error_body(failure), 500)
