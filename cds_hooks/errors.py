"""One exception tree for everything a client can get wrong, and the JSON error body.

Every error a client sees says what was wrong and carries a FHIR OperationOutcome
(CDS Hooks 3.0 asks for one on non-2xx answers); no traceback ever leaves the process.
"""

from __future__ import annotations

from typing import Any


class CdsError(Exception):
    """Base class: an HTTP status, a short error code and a message a developer can act on."""

    status = 400
    code = "bad-request"
    issue_code = "invalid"

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class BadRequest(CdsError):
    pass


class Unauthorized(CdsError):
    status = 401
    code = "unauthorized"
    issue_code = "security"


class NotFound(CdsError):
    status = 404
    code = "not-found"
    issue_code = "not-found"


class MethodNotAllowed(CdsError):
    status = 405
    code = "method-not-allowed"
    issue_code = "not-supported"


class PreconditionFailed(CdsError):
    """412: the patient's record could not be obtained (CDS Hooks §prefetch)."""

    status = 412
    code = "precondition-failed"
    issue_code = "not-found"


class PayloadTooLarge(CdsError):
    status = 413
    code = "payload-too-large"
    issue_code = "too-costly"


class UnsupportedMediaType(CdsError):
    status = 415
    code = "unsupported-media-type"
    issue_code = "not-supported"


class ServiceUnavailable(CdsError):
    """503: a store the service cannot answer safely without is down; the client may retry."""

    status = 503
    code = "service-unavailable"
    issue_code = "transient"


def operation_outcome(message: str, problems: list[str], issue_code: str, severity: str = "error") -> dict[str, Any]:
    details = problems or [message]
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": issue_code, "diagnostics": text} for text in details],
    }


def error_body(error: CdsError) -> dict[str, Any]:
    """The JSON body of an error answer (401 bodies are built elsewhere: they say nothing)."""
    body: dict[str, Any] = {"error": error.code, "detail": error.message}
    if error.problems:
        body["problems"] = error.problems
    body["operationOutcome"] = operation_outcome(error.message, error.problems, error.issue_code)
    return body
