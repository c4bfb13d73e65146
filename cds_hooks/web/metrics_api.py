"""``GET /metrics`` in the Prometheus text format, behind the same static token as ``/audit``
(off when none is configured): metrics name rules and traffic volumes."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from .. import metrics
from ..errors import NotFound, Unauthorized
from .state import current_state

bp = Blueprint("metrics", __name__)


def require_static_token(token: str, what: str) -> None:
    """Refuse unless ``Authorization: Bearer <token>`` (compared in constant time)."""
    if not token:
        raise NotFound(f"The {what} is disabled; set CDS_HOOKS_AUDIT_TOKEN to enable it")
    header = request.headers.get("Authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode()):
        raise Unauthorized(f"invalid {what} token")


@bp.get("/metrics")
def scrape() -> Response:
    state = current_state()
    require_static_token(state.config.audit_token, "metrics endpoint")
    spool = state.store.spool
    body = metrics.exposition(spool.depth if spool is not None else (lambda: 0))
    return Response(body, status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})
