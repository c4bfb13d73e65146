"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: it can record
decisions and check tokens, i.e. its database answers within the timeout; 503 with the
reason otherwise, so a load balancer stops sending calls it would have to spool)."""

from __future__ import annotations

from flask import Blueprint, Response

from .responses import json_response
from .state import current_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def health() -> Response:
    state = current_state()
    pipeline = state.pipeline
    return json_response(
        {
            "status": "ok",
            "rulesRevision": pipeline.rulebook.revision,
            "evaluator": pipeline.evaluator.name,
            "rules": len(pipeline.rulebook.rules),
            "auditWriteFailures": state.store.write_failure_count(),
        }
    )


@bp.get("/readyz")
def ready() -> Response:
    store = current_state().store
    reason = store.readiness()
    depth = store.spool.depth() if store.spool is not None else 0
    if reason is not None:
        return json_response({"status": "unavailable", "reason": reason, "spoolDepth": depth}, 503)
    if depth:
        store.drain_spool(100)
        depth = store.spool.depth() if store.spool is not None else 0
    return json_response({"status": "ready", "spoolDepth": depth})
