"""Read-only HTTP endpoints over the decision log, for safety officers' dashboards.

They answer with the same data as ``cryo-cds audit``. They are off unless an audit token
is configured, and then need ``Authorization: Bearer <token>``: dashboards are not CDS
clients and do not hold CDS Hooks JWTs.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request

from .audit import analytics
from .errors import BadRequest, NotFound, Unauthorized
from .routes import json_response

bp = Blueprint("audit_api", __name__, url_prefix="/audit")


def _state():  # type: ignore[no-untyped-def]
    return current_app.extensions["cryo_cds"]


@bp.before_request
def require_audit_token() -> None:
    token = _state().config.audit_token
    if not token:
        raise NotFound("The audit API is disabled; set CDS_HOOKS_AUDIT_TOKEN to enable it")
    header = request.headers.get("Authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("invalid audit token")


def _instant(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an ISO 8601 date or date-time, got {raw!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@bp.get("/summary")
def summary() -> Response:
    return json_response({"rules": analytics.rule_summary(_state().store, _instant("since"), _instant("until"))})


@bp.get("/silent-rules")
def silent() -> Response:
    rule_ids = [rule.id for rule in _state().pipeline.rulebook.rules]
    return json_response(analytics.silent_rules(_state().store, rule_ids, _instant("since"), _instant("until")))


@bp.get("/decisions/<decision_id>")
def decision(decision_id: str) -> Response:
    found = analytics.explain_decision(_state().store, decision_id)
    if found is None:
        raise NotFound(f"No decision {decision_id}")
    return json_response(found)


@bp.get("/cards/<card_uuid>")
def card(card_uuid: str) -> Response:
    found = analytics.explain_card(_state().store, card_uuid)
    if found is None:
        raise NotFound(f"No card {card_uuid}")
    return json_response(found)
