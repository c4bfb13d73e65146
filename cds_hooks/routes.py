"""HTTP endpoints: discovery, service calls, feedback. Thin: they parse, delegate to the
pipeline and the audit store, and answer JSON. A call answers 200 only once its decision is
safe (in the database or the local spool); feedback is bounded in items and field sizes."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, g, request

from . import metrics
from .audit.records import FeedbackItem
from .audit.store import is_unavailable
from .deadline import CallDeadline
from .errors import BadRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from .fhirtime import to_instant
from .hooks import parse_hook_request, text_problem
from .service import SERVICES, Outcome, ServiceDefinition
from .web.body import json_body
from .web.responses import json_bytes, json_response
from .web.state import current_state

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)


@bp.get("/cds-services")
@bp.get("/cds-services/")
def discovery() -> Response:
    state = current_state()
    services = [
        {
            "hook": service.hook,
            "id": service.id,
            "title": service.title,
            "description": service.description,
            "prefetch": state.prefetch,
        }
        for service in SERVICES.values()
    ]
    return json_response({"services": services})


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES.get(service_id)
    if service is None:
        raise NotFound(f"There is no CDS service '{service_id}'; GET /cds-services lists them")
    return service


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    state = current_state()
    deadline = CallDeadline(state.config.call_deadline_s)  # the whole call, body parsing included
    service = _service(service_id)
    raw = json_body()
    hook_request = parse_hook_request(raw, service.hook)
    claims = current_claims()
    pipeline = state.pipeline.for_claims(claims)  # the site policy's section for this tenant/issuer
    source = state.record_source(hook_request, claims, deadline)
    outcome = pipeline.run(service, hook_request, source, deadline)
    body = json_bytes(outcome.body)  # encoded before recording: no row for an answer that fails
    if not state.store.record_or_spool(outcome.decision, outcome.evaluated_rules):
        raise ServiceUnavailable("The decision could not be recorded; retry shortly")
    _observe(outcome)
    response = Response(body, status=outcome.status, mimetype="application/json")
    # The parsed request is let go once the answer is sent, not before it: freeing the objects
    # of a large record took about a fourteenth of a 5,000-resource call.
    kept = [raw, hook_request]
    response.call_on_close(kept.clear)
    return response


def _observe(outcome: Outcome) -> None:
    for step, ms in outcome.timings_ms.items():
        metrics.step_seconds(step).observe(ms / 1000)
    for card in outcome.decision.cards:
        metrics.cards(card.rule_id, card.indicator).inc()


@bp.after_request
def count_call(response: Response) -> Response:
    if request.endpoint == "cds.call_service" and request.view_args:
        service = SERVICES.get(str(request.view_args.get("service_id")))
        if service is not None:
            metrics.calls(service.id, service.hook, str(response.status_code)).inc()
    return response


#: Longest accepted feedback fields (the log's column sizes; free text bounded generously).
FEEDBACK_MAX_CHARS = {
    "card": 64,
    "acceptedSuggestions[].id": 64,
    "overrideReason.reason.code": 128,
    "overrideReason.reason.system": 256,
    "overrideReason.reason.display": 1024,
    "overrideReason.userComment": 4000,
}
MAX_SUGGESTIONS = 50


def _feedback_text_problems(raw: dict[str, Any], where: str) -> list[str]:
    """Length and character problems of every string the store would keep, named by field."""
    values: list[tuple[str, Any]] = [("card", raw.get("card"))]
    accepted = raw.get("acceptedSuggestions")
    if isinstance(accepted, list):
        if len(accepted) > MAX_SUGGESTIONS:
            return [f"{where}.acceptedSuggestions has more than {MAX_SUGGESTIONS} entries"]
        values += [("acceptedSuggestions[].id", a.get("id")) for a in accepted if isinstance(a, dict)]
    reason = raw.get("overrideReason")
    if isinstance(reason, dict):
        values.append(("overrideReason.userComment", reason.get("userComment")))
        coding = reason.get("reason")
        if isinstance(coding, dict):
            values += [(f"overrideReason.reason.{k}", coding.get(k)) for k in ("code", "system", "display")]
    problems = []
    for name, value in values:
        if isinstance(value, str):
            limit = FEEDBACK_MAX_CHARS[name]
            if name == "overrideReason.userComment":
                value = value.replace("\n", " ").replace("\r", " ").replace("\t", " ")
            if problem := text_problem(value, f"{where}.{name}", limit):
                problems.append(problem)
    return problems


def _feedback_items(body: Any, max_items: int) -> list[FeedbackItem]:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise BadRequest("The feedback body must be an object with a non-empty 'feedback' array")
    if len(body["feedback"]) > max_items:
        raise PayloadTooLarge(
            f"A feedback post may hold at most {max_items} items "
            f"(CDS_HOOKS_FEEDBACK_MAX_ITEMS); this one has {len(body['feedback'])}"
        )
    items, problems = [], []
    for index, raw in enumerate(body["feedback"]):
        where = f"feedback[{index}]"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be an object")
            continue
        if text_problems := _feedback_text_problems(raw, where):
            problems.extend(text_problems)
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
            if not isinstance(accepted, list) or not all(
                isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted
            ):
                problems.append(f'{where}.acceptedSuggestions must be an array of {{"id": suggestion uuid}}')
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
                fields = [coding.get(k) for k in ("code", "system", "display")] if isinstance(coding, dict) else []
                if not isinstance(coding, dict) or not all(f is None or isinstance(f, str) for f in fields):
                    problems.append(f"{where}.overrideReason.reason must be a Coding (code, system, display strings)")
                else:
                    code, system, display = fields[0], fields[1], fields[2]
                comment = reason.get("userComment") if isinstance(reason.get("userComment"), str) else None
        if not problems and isinstance(when, datetime) and isinstance(card, str) and isinstance(outcome, str):
            items.append(
                FeedbackItem(
                    card_uuid=card,
                    outcome=outcome,
                    outcome_timestamp=when,
                    accepted_suggestions=tuple(suggestion_ids),
                    override_code=code,
                    override_system=system,
                    override_display=display,
                    user_comment=comment,
                )
            )
    if problems:
        raise BadRequest("The feedback is not valid", problems=problems)
    return items


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    _service(service_id)
    state = current_state()
    items = _feedback_items(json_body(), state.config.feedback_max_items)
    try:
        state.store.record_feedback(service_id, items)
    except Exception as exc:
        if is_unavailable(exc):
            raise ServiceUnavailable("The feedback could not be recorded; retry shortly") from None
        raise
    return json_response({})


def current_claims() -> dict[str, Any] | None:
    return getattr(g, "jwt_claims", None)
