"""The CDS Hooks request on the wire: checked field by field, turned into a typed object.

Lenient where real clients are sloppy (extra fields, empty arrays, missing Bundle.type),
strict where the service cannot work without a value; every problem is reported at once
so a client developer fixes the request in one round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .fhir_targets import TargetRefused, parse_target

ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    fhir_server: str | None
    access_token: str | None
    user_id: str
    patient_id: str
    encounter_id: str | None
    selections: tuple[str, ...] | None
    draft_orders: dict[str, Any]
    prefetch: dict[str, Any] | None


#: Longest accepted value of each stored or forwarded field (the decision log's column sizes
#: and generous bounds for identifiers); longer values are refused, never cut.
MAX_CHARS = {
    "hookInstance": 128,
    "patientId": 256,
    "userId": 512,
    "encounterId": 256,
    "fhirServer": 2048,
    "access_token": 8192,
    "selection": 512,
}
MAX_DRAFT_ORDERS = 200
# NUL and other C0 controls, DEL, and lone UTF-16 surrogates (JSON "\ud800" escapes): no
# database stores them faithfully and no identifier needs them.
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def text_problem(value: str, name: str, max_chars: int) -> str | None:
    """Why ``value`` cannot be stored as field ``name``, or None."""
    if len(value) > max_chars:
        return f"{name} is longer than {max_chars} characters"
    if _UNSTORABLE.search(value):
        return f"{name} contains control characters, NUL or unpaired surrogates"
    return None


def _string(body: dict[str, Any], key: str, where: str, problems: list[str], *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            problems.append(f"{where}{key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}{key} must be a non-empty string")
        return None
    if problem := text_problem(value, f"{where}{key}", MAX_CHARS.get(key, 1024)):
        problems.append(problem)
        return None
    return value


def parse_hook_request(body: Any, expected_hook: str) -> HookRequest:
    """Validate a service call body for ``expected_hook``; raise BadRequest listing every problem."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    problems: list[str] = []
    hook = _string(body, "hook", "", problems, required=True)
    if hook is not None and hook != expected_hook:
        problems.append(f"hook is '{hook}' but this service answers '{expected_hook}'")
    hook_instance = _string(body, "hookInstance", "", problems, required=True)
    fhir_server = _string(body, "fhirServer", "", problems, required=False)
    if fhir_server is not None:
        try:
            parse_target(fhir_server)
        except TargetRefused as exc:
            problems.append(f"fhirServer is not usable: {exc}")
    access_token = _parse_authorization(body.get("fhirAuthorization"), fhir_server, problems)
    for key in ("extension",):
        if key in body and not isinstance(body[key], dict):
            problems.append(f"{key} must be an object")

    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        problems.append("prefetch must be an object mapping prefetch keys to FHIR resources or null")
        prefetch = None
    elif isinstance(prefetch, dict):
        for key, value in prefetch.items():
            if value is not None and not isinstance(value, dict):
                problems.append(f"prefetch.{key} must be a FHIR resource, a Bundle or null")

    context = body.get("context")
    user_id = patient_id = encounter_id = None
    selections: tuple[str, ...] | None = None
    draft_orders: dict[str, Any] = {}
    if context is None:
        problems.append("context is required")
    elif not isinstance(context, dict):
        problems.append("context must be an object")
    else:
        user_id = _string(context, "userId", "context.", problems, required=True)
        patient_id = _string(context, "patientId", "context.", problems, required=True)
        encounter_id = _string(context, "encounterId", "context.", problems, required=False)
        draft = context.get("draftOrders")
        if draft is None:
            problems.append("context.draftOrders is required")
        elif not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
            problems.append("context.draftOrders must be a FHIR Bundle")
        elif "entry" in draft and not isinstance(draft["entry"], list):
            problems.append("context.draftOrders.entry must be an array")
        elif len(draft.get("entry") or ()) > MAX_DRAFT_ORDERS:
            problems.append(f"context.draftOrders has more than {MAX_DRAFT_ORDERS} entries")
        else:
            draft_orders = draft
        selections = _parse_selections(context.get("selections"), expected_hook, problems)

    if problems or not (hook and hook_instance and user_id and patient_id):
        raise BadRequest("The CDS Hooks request is not valid", problems=problems)
    return HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        fhir_server=fhir_server.rstrip("/") if fhir_server else None,
        access_token=access_token,
        user_id=user_id,
        patient_id=patient_id,
        encounter_id=encounter_id,
        selections=selections,
        draft_orders=draft_orders,
        prefetch=prefetch,
    )


def _parse_selections(value: Any, hook: str, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        if hook == ORDER_SELECT:
            problems.append("context.selections is required for order-select")
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        problems.append("context.selections must be an array of 'Type/id' strings")
        return None
    if len(value) > MAX_DRAFT_ORDERS:
        problems.append(f"context.selections has more than {MAX_DRAFT_ORDERS} entries")
        return None
    for item in value:
        if problem := text_problem(item, "context.selections[]", MAX_CHARS["selection"]):
            problems.append(problem)
            return None
    return tuple(value)


def _parse_authorization(value: Any, fhir_server: str | None, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append("fhirAuthorization must be an object")
        return None
    if fhir_server is None:
        problems.append("fhirServer is required when fhirAuthorization is present")
    token = value.get("access_token")
    if not isinstance(token, str) or not token:
        problems.append("fhirAuthorization.access_token must be a non-empty string")
        token = None
    elif len(token) > MAX_CHARS["access_token"] or _UNSTORABLE.search(token) or " " in token:
        problems.append("fhirAuthorization.access_token is too long or contains spaces or control characters")
        token = None
    token_type = value.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        problems.append("fhirAuthorization.token_type must be 'Bearer'")
    expires = value.get("expires_in")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
        problems.append("fhirAuthorization.expires_in must be an integer number of seconds")
    return token
