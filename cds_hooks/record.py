"""The patient's record for one call: prefetch read per CDS Hooks rules, parsed as FHIR R4.

The four prefetch states mean different things (spec §prefetch): an absent key is data we
do not have, ``null`` is "the client has none", an OperationOutcome is a failed query and a
Bundle is an answer. Only this module (and order parsing) imports ``fhir.resources``; a
resource that is not valid R4 is skipped and reported as a data gap instead of failing
the whole call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir.resources.R4B import get_fhir_model_class

log = logging.getLogger(__name__)

# Prefetch key -> (FHIR query template, resource types it yields). Discovery advertises these.
OBSERVATION_CODES_PLACEHOLDER = "{observation_codes}"
PREFETCH_QUERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "patient": ("Patient/{{context.patientId}}", ("Patient",)),
    "conditions": ("Condition?patient={{context.patientId}}", ("Condition",)),
    "medicationRequests": ("MedicationRequest?patient={{context.patientId}}", ("MedicationRequest", "Medication")),
    "medicationStatements": ("MedicationStatement?patient={{context.patientId}}", ("MedicationStatement", "Medication")),
    "medicationAdministrations": (
        "MedicationAdministration?patient={{context.patientId}}",
        ("MedicationAdministration", "Medication"),
    ),
    "observations": (
        "Observation?patient={{context.patientId}}&code=" + OBSERVATION_CODES_PLACEHOLDER,
        ("Observation",),
    ),
    "devices": ("Device?patient={{context.patientId}}", ("Device",)),
    "deviceUseStatements": ("DeviceUseStatement?patient={{context.patientId}}", ("DeviceUseStatement",)),
    "allergies": ("AllergyIntolerance?patient={{context.patientId}}", ("AllergyIntolerance",)),
    "procedures": ("Procedure?patient={{context.patientId}}", ("Procedure",)),
    "serviceRequests": ("ServiceRequest?patient={{context.patientId}}", ("ServiceRequest",)),
    "appointments": ("Appointment?actor=Patient/{{context.patientId}}", ("Appointment",)),
}
# Keys whose absence leaves rules unchecked (an MD-INCOMPLETE card). The others are often
# not offered by EHRs, and draftOrders already carries the planned services.
COMPLETENESS_KEYS = ("patient", "conditions", "medicationRequests", "observations", "devices",
                     "allergies", "procedures")


def prune_empty(value: Any) -> Any:
    """Drop null, "", [] and {} recursively: real clients send ``"coding":[{}]`` and
    ``"reasonCode":[]``, which FHIR forbids but which carry no information."""
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        items = [prune_empty(v) for v in value]
        return [v for v in items if v not in (None, "", [], {})]
    return value


def parse_resource(raw: Any) -> tuple[Any | None, str | None]:
    """(model, None) for a valid R4 resource, (None, reason) otherwise. Never raises."""
    if not isinstance(raw, dict) or not isinstance(raw.get("resourceType"), str):
        return None, "not a FHIR resource (no resourceType)"
    resource_type = raw["resourceType"]
    try:
        model_class = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        return None, f"unknown resource type {resource_type!r}"
    try:
        return model_class.model_validate(prune_empty(raw)), None
    except Exception as exc:  # pydantic raises ValidationError and a few others
        first = str(exc).splitlines()
        reason = first[1].strip() if len(first) > 1 else (first[0] if first else "invalid")
        return None, f"{resource_type} is not valid FHIR R4 ({reason[:160]})"


def ref_of(resource: Any) -> str:
    """'Type/id' for a parsed resource (or its type alone when it has no id)."""
    resource_id = getattr(resource, "id", None)
    return f"{resource.get_resource_type()}/{resource_id}" if resource_id else resource.get_resource_type()


@dataclass
class PatientRecord:
    """Everything we know about the patient for this call, grouped by resource type."""

    patient: Any | None = None
    by_type: dict[str, list[Any]] = field(default_factory=dict)
    by_ref: dict[str, Any] = field(default_factory=dict)
    available: set[str] = field(default_factory=set)  # keys answered (possibly empty)
    gaps: dict[str, str] = field(default_factory=dict)  # key -> why it is missing
    skipped: list[str] = field(default_factory=list)  # resources that were not valid R4

    def of(self, resource_type: str) -> list[Any]:
        return self.by_type.get(resource_type, [])

    def resolve(self, reference: str | None, container: Any = None, expected: str | None = None) -> Any | None:
        """Follow a reference to a contained resource ('#id') or to one in the record; a
        target of another type than ``expected`` counts as unresolved."""
        if not reference:
            return None
        found = None
        if reference.startswith("#") and container is not None:
            for contained in getattr(container, "contained", None) or ():
                if getattr(contained, "id", None) == reference[1:]:
                    found = contained
                    break
        elif not reference.startswith("#"):
            parts = reference.split("/_history", 1)[0].rstrip("/").split("/")
            found = self.by_ref.get("/".join(parts[-2:])) if len(parts) >= 2 else None
        if found is not None and expected is not None and found.get_resource_type() != expected:
            return None
        return found

    def add(self, resource: Any) -> None:
        if resource.get_resource_type() == "Patient" and self.patient is None:
            self.patient = resource
        self.by_type.setdefault(resource.get_resource_type(), []).append(resource)
        if getattr(resource, "id", None):
            self.by_ref[ref_of(resource)] = resource


def _list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else nothing: a wrong type must not stop the call."""
    return value if isinstance(value, list) else []


def _entries(value: Mapping[str, Any]) -> Iterable[Any]:
    for entry in _list(value.get("entry")):
        if isinstance(entry, dict):
            yield entry.get("resource")


def _failure_of(value: Mapping[str, Any]) -> str | None:
    """The diagnostics of an OperationOutcome answer (bare or inside a Bundle), else None."""
    outcomes = (
        [value]
        if value.get("resourceType") == "OperationOutcome"
        else [r for r in _entries(value) if isinstance(r, dict) and r.get("resourceType") == "OperationOutcome"]
    )
    for outcome in outcomes:
        for issue in _list(outcome.get("issue")):
            if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
                return str(issue.get("diagnostics") or issue.get("code") or "query failed")
    return None


def add_answer(record: PatientRecord, key: str, value: Any, wanted: tuple[str, ...]) -> None:
    """Put one prefetch (or fetched) answer into the record according to its state."""
    if value is None:
        record.available.add(key)  # "the client has no data": an answer, and it is empty
        return
    if not isinstance(value, dict):
        record.gaps[key] = "prefetch value is not a FHIR resource"
        return
    failure = _failure_of(value)
    if failure is not None:
        record.gaps[key] = f"the query failed: {failure}"
        return
    raw_resources = list(_entries(value)) if value.get("resourceType") == "Bundle" else [value]
    for raw in raw_resources:
        resource, problem = parse_resource(raw)
        if resource is None:
            record.skipped.append(f"{key}: {problem}")
            continue
        if wanted and resource.get_resource_type() not in wanted:
            continue  # e.g. the Patient included alongside a searchset, or an OperationOutcome note
        record.add(resource)
    record.available.add(key)


class RecordSource(Protocol):
    """Where missing parts of the record come from (the client's FHIR server)."""

    def query(self, key: str) -> Any: ...

    def complete(self, bundle: dict[str, Any], key: str) -> dict[str, Any]: ...


def next_page_url(value: Any) -> str | None:
    """The ``next`` link of a searchset Bundle page, if there is one."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return None
    return next((str(link["url"]) for link in _list(value.get("link"))
                 if isinstance(link, dict) and link.get("relation") == "next" and link.get("url")), None)


def build_record(prefetch: Mapping[str, Any] | None, source: RecordSource | None = None) -> PatientRecord:
    """Read every prefetch value, then ask ``source`` for the keys still missing and for the
    further pages of paginated prefetch; ``source`` raises LookupError with the reason.

    Values under keys we did not declare are read too, by resource type: a client that
    names its prefetch differently still gets its data checked."""
    record = PatientRecord()
    prefetch = prefetch or {}
    for key, value in prefetch.items():
        wanted = PREFETCH_QUERIES[key][1] if key in PREFETCH_QUERIES else ()
        if next_page_url(value):
            if source is None:
                record.gaps[key] = "only the first page was sent and there is no FHIR server to ask for the rest"
            else:
                try:
                    value = source.complete(value, key)
                except LookupError as exc:
                    record.gaps[key] = f"further pages could not be fetched: {exc}"
        add_answer(record, key, value, wanted)
    for key, (_template, wanted) in PREFETCH_QUERIES.items():
        if key in record.available or key in record.gaps:
            continue
        if record.of(wanted[0]):
            record.available.add(key)  # delivered under another key
        elif source is None:
            record.gaps[key] = "not provided in prefetch and no FHIR server to ask"
        else:
            try:
                add_answer(record, key, source.query(key), wanted)
            except LookupError as exc:
                record.gaps[key] = str(exc)
    if record.skipped:
        log.info("skipped %d resources that are not valid FHIR R4", len(record.skipped))
    return record


@dataclass(frozen=True)
class UnreadableDraft:
    """A draft order that is not valid FHIR R4: kept raw so it can still be recognised."""

    ref: str
    reason: str
    raw: Any


def parse_draft_orders(bundle: Mapping[str, Any]) -> tuple[list[Any], list[UnreadableDraft]]:
    """The draft resources of context.draftOrders, parsed; invalid ones returned apart, not fatal."""
    resources, unreadable = [], []
    for raw in _entries(bundle):
        resource, problem = parse_resource(raw)
        if resource is None:
            kind = raw.get("resourceType", "resource") if isinstance(raw, dict) else "resource"
            ref = f"{kind}/{raw.get('id')}" if isinstance(raw, dict) and raw.get("id") else str(kind)
            unreadable.append(UnreadableDraft(ref, problem or "invalid", raw))
        else:
            resources.append(resource)
    return resources, unreadable
