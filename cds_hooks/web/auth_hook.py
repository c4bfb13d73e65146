"""Authentication of every CDS call (CDS Hooks §8 JWT) and the refusal of credentials in URLs.

A token in a query string ends up in access logs, proxies and browser history, so such a
request is refused before anything else looks at it (and the access log format leaves query
strings out: see ``cds_hooks/gunicorn_conf.py``)."""

from __future__ import annotations

import logging
import re

from flask import Flask, g, request

from ..auth import AuthError
from ..errors import BadRequest, ServiceUnavailable, Unauthorized
from ..replay import ReplayStoreUnavailable
from .logsafe import log_safe
from .state import ServiceState

log = logging.getLogger("cds_hooks.app")
_CREDENTIAL_PARAMS = frozenset(
    {"access_token", "token", "id_token", "jwt", "bearer", "auth", "authorization", "api_key", "apikey", "password"}
)
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?")
# Endpoints with their own protection (a static audit or console token) or none (probes, and
# the rule pages a card's source.url opens for any clinician).
_OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/rules"})
_OPEN_PREFIXES = ("/audit/", "/rules/", "/console")


def is_open_path(path: str) -> bool:
    """True for paths that do not take a CDS Hooks JWT."""
    return path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES)


def credentials_in_query() -> bool:
    """True when the query string carries something that looks like a credential."""
    raw = request.query_string.decode("latin-1")
    if not raw:
        return False
    if _JWT_LIKE.search(raw):
        return True
    return any(key.lower() in _CREDENTIAL_PARAMS for key in request.args)


def install_authentication(app: Flask, state: ServiceState) -> None:
    @app.before_request
    def authenticate() -> None:
        if credentials_in_query():
            raise BadRequest("Credentials must not be sent in the URL; use the Authorization header")
        if request.method == "OPTIONS" or state.verifier is None:
            return
        if is_open_path(request.path):
            return
        audience = state.config.public_base_url + request.path
        try:
            g.jwt_claims = state.verifier.verify(request.headers.get("Authorization"), audience)
        except AuthError as exc:
            log.info("refused %s %s: %s", request.method, log_safe(request.path), exc)
            raise Unauthorized("invalid or missing bearer token") from None
        except ReplayStoreUnavailable:
            raise ServiceUnavailable("token replay protection is unavailable; retry shortly") from None
