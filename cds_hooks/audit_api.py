"""Read-only HTTP endpoints over the decision log, for safety officers' dashboards.

They answer with the same data as ``cryo-cds audit``. They are off unless an audit token
is configured, and then need ``Authorization: Bearer <token>``: dashboards are not CDS
clients and do not hold CDS Hooks JWTs. ``audit.analytics`` (and with it SQLAlchemy) is
imported at the first query, not by a serving process that never answers one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, request

from .errors import BadRequest, NotFound
from .web.metrics_api import require_static_token
from .web.responses import json_response
from .web.state import ServiceState, current_state

bp = Blueprint("audit_api", __name__, url_prefix="/audit")
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000  # bounds a date filter may name


def _state() -> ServiceState:
    return current_state()


@bp.before_request
def require_audit_token() -> None:
    require_static_token(_state().config.audit_token, "audit API")


def _instant(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(f"'{name}' must be an ISO 8601 date or date-time, got {raw[:64]!r}") from None
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise BadRequest(f"'{name}' must lie between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


@bp.get("/summary")
def summary() -> Response:
    from .audit import analytics

    return json_response({"rules": analytics.rule_summary(_state().store, _instant("since"), _instant("until"))})


@bp.get("/silent-rules")
def silent() -> Response:
    from .audit import analytics

    rule_ids = [rule.id for rule in _state().pipeline.rulebook.rules]
    return json_response(analytics.silent_rules(_state().store, rule_ids, _instant("since"), _instant("until")))


@bp.get("/decisions/<decision_id>")
def decision(decision_id: str) -> Response:
    from .audit import analytics

    found = analytics.explain_decision(_state().store, decision_id)
    if found is None:
        raise NotFound(f"No decision {decision_id}")
    return json_response(found)


@bp.get("/cards/<card_uuid>")
def card(card_uuid: str) -> Response:
    from .audit import analytics

    found = analytics.explain_card(_state().store, card_uuid)
    if found is None:
        raise NotFound(f"No card {card_uuid}")
    return json_response(found)
