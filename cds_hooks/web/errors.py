"""Error answers: every failure becomes a JSON body with an OperationOutcome (a bare 401
with ``WWW-Authenticate``), logged on one escaped line; no traceback leaves the process."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import CdsError, MethodNotAllowed, NotFound, PayloadTooLarge, error_body
from .logsafe import log_safe
from .responses import json_response

log = logging.getLogger("cds_hooks.routes")
INVALID_TOKEN = 'Bearer error="invalid_token"'


def handle_cds_error(error: CdsError) -> Response:
    if error.status == 401:
        # RFC 6750 §3.1: say the token was refused, nothing about why.
        return Response(status=401, headers={"WWW-Authenticate": INVALID_TOKEN})
    log.info("%s %s -> %d %s", request.method, log_safe(request.path), error.status, log_safe(error.message))
    return json_response(error_body(error), error.status)


def install_error_handlers(app: Flask) -> None:
    app.register_error_handler(CdsError, handle_cds_error)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: Exception) -> Response:
        return handle_cds_error(
            PayloadTooLarge(
                f"The request body is larger than the configured limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
            )
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.code == 404:
            return handle_cds_error(
                NotFound(f"No endpoint at {log_safe(request.path, 200)}; GET /cds-services lists the services")
            )
        if error.code == 405:
            return handle_cds_error(
                MethodNotAllowed(f"{request.method} is not allowed on {log_safe(request.path, 200)}")
            )
        wrapped = CdsError(error.description or error.name)
        wrapped.status = error.code or 400
        return handle_cds_error(wrapped)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.error(
            "unexpected %s on %s %s", type(error).__name__, request.method, log_safe(request.path), exc_info=error
        )
        failure = CdsError("The service failed to process this request; it has been logged")
        failure.status, failure.code, failure.issue_code = 500, "internal-error", "exception"
        return json_response(error_body(failure), 500)
