"""HTTP endpoints: discovery, service calls, feedback, health. Thin: they parse, delegate to
the pipeline and the audit store, and turn errors into JSON bodies."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from .audit.records import FeedbackItem
from .errors import BadRequest, CdsError, NotFound, UnsupportedMediaType
from .fhirtime import to_instant
from .hooks import parse_hook_request
from .service import SERVICES, ServiceDefinition

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status,
                    mimetype="application/json")


def _state() -> Any:
    return current_app.extensions["cryo_cds"]


@bp.get("/cds-services")
@bp.get("/cds-services/")
def discovery() -> Response:
    state = _state()
    services = [{
        "hook": service.hook, "id": service.id, "title": service.title, "description": service.description,
        "prefetch": state.prefetch,
    } for service in SERVICES.values()]
    return json_response({"services": services})


def _body() -> Any:
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"Send the request as application/json, not {request.mimetype or 'no content type'}")
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply to be a CDS Hooks message") from None


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES.get(service_id)
    if service is None:
        raise NotFound(f"There is no CDS service '{service_id}'; GET /cds-services lists them")
    return service


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    service = _service(service_id)
    hook_request = parse_hook_request(_body(), service.hook)
    state = _state()
    outcome = state.pipeline.run(service, hook_request, state.record_source(hook_request))
    state.store.record_decision_safely(outcome.decision, outcome.evaluated_rules)
    return json_response(outcome.body, outcome.status)


def _feedback_items(body: Any) -> list[FeedbackItem]:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise BadRequest("The feedback body must be an object with a non-empty 'feedback' array")
    items, problems = [], []
    for index, raw in enumerate(body["feedback"]):
        where = f"feedback[{index}]"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be an object")
            continue
        card, outcome = raw.get("card"), raw.get("outcome")
        if not isinstance(card, str) or not card:
            problems.append(f"{where}.card must be the card's uuid")
        if outcome not in ("accepted", "overridden"):
            problems.append(f"{where}.outcome must be 'accepted' or 'overridden'")
        stamp = raw.get("outcomeTimestamp")
        when = to_instant(stamp) if isinstance(stamp, str) and "T" in stamp else None
        if when is None:
            problems.append(f"{where}.outcomeTimestamp must be an RFC 3339 date-time")
        accepted = raw.get("acceptedSuggestions")
        suggestion_ids: list[str] = []
        if accepted is not None:
            if not isinstance(accepted, list) or not all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted):
                problems.append(f"{where}.acceptedSuggestions must be an array of {{\"id\": suggestion uuid}}")
            else:
                suggestion_ids = [a["id"] for a in accepted]
        elif outcome == "accepted":
            problems.append(f"{where}.acceptedSuggestions is required when the outcome is accepted")
        reason = raw.get("overrideReason")
        code = system = display = comment = None
        if reason is not None:
            if not isinstance(reason, dict) or not (reason.get("reason") or reason.get("userComment")):
                problems.append(f"{where}.overrideReason needs a reason Coding and/or a userComment")
            else:
                coding = reason.get("reason") or {}
                fields = (coding.get("code"), coding.get("system"), coding.get("display")) if isinstance(coding, dict) else ()
                if not isinstance(coding, dict) or not all(f is None or isinstance(f, str) for f in fields):
                    problems.append(f"{where}.overrideReason.reason must be a Coding (code, system, display strings)")
                else:
                    code, system, display = fields
                comment = reason.get("userComment") if isinstance(reason.get("userComment"), str) else None
        if not problems and isinstance(when, datetime):
            items.append(FeedbackItem(card_uuid=card, outcome=outcome, outcome_timestamp=when,
                                      accepted_suggestions=tuple(suggestion_ids), override_code=code,
                                      override_system=system, override_display=display, user_comment=comment))
    if problems:
        raise BadRequest("The feedback is not valid", problems=problems)
    return items


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    _service(service_id)
    items = _feedback_items(_body())
    _state().store.record_feedback(service_id, items)
    return json_response({})


@bp.get("/healthz")
def health() -> Response:
    state = _state()
    return json_response({"status": "ok", "rulesRevision": state.pipeline.rulebook.revision,
                          "evaluator": state.pipeline.evaluator.name, "rules": len(state.pipeline.rulebook.rules),
                          "auditWriteFailures": type(state.store).write_failures})


def handle_cds_error(error: CdsError) -> Response:
    from .errors import error_body

    if error.status == 401:
        return Response(status=401, headers={"WWW-Authenticate": "Bearer"})
    log.info("%s %s -> %d %s", request.method, request.path, error.status, error.message)
    return json_response(error_body(error), error.status)


def current_claims() -> dict[str, Any] | None:
    return getattr(g, "jwt_claims", None)
