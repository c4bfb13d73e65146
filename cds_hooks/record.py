"""The patient's record for one call: prefetch read per CDS Hooks rules, parsed as FHIR R4.

The four prefetch states mean different things (spec §prefetch): an absent key is data we
do not have, ``null`` is "the client has none", an OperationOutcome is a failed query and a
Bundle is an answer. Resources are read by ``lenient.read_resource``: strictly when valid
R4B, leniently when not; one whose needed fields cannot be read is skipped and named in
``unread`` (an MD-INCOMPLETE card and the decision's data gaps), never dropped silently.
With a ``RuleReach`` (``relevance.py``), resources no rule can read are counted in
``counted`` instead of being validated: the cost of a call then follows what the rules read,
not the size of the patient's history.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .lenient import Reading, prune_empty, read_resource
from .plainread import read_plain
from .prefetch import (
    COMPLETENESS_KEYS,
    OBSERVATION_CODES_PLACEHOLDER,
    PREFETCH_QUERIES,
    SUPPLEMENTARY_KEYS,
)

if TYPE_CHECKING:
    from .relevance import RuleReach

log = logging.getLogger(__name__)

# Resource types whose presence means the record holds clinical history (MD-NO-DATA).
CLINICAL_TYPES = ("Condition", "Observation", "MedicationRequest", "MedicationStatement", "MedicationAdministration")
MEDICATION_USERS = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")


def read(raw: Any) -> Reading:
    """One raw resource read: straight from its JSON when it is plainly valid (plainread.py),
    else by the full R4B reader, which repairs or names it."""
    return read_plain(raw) or read_resource(raw)


def parse_resource(raw: Any) -> tuple[Any | None, str | None]:
    """(resource, None) for a readable resource (strictly or leniently), (None, reason) otherwise."""
    reading = read(raw)
    return (reading.resource, None) if reading.resource is not None else (None, reading.why)


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
    unread: dict[str, str] = field(default_factory=dict)  # "Type/id" -> why it was skipped
    lenient: dict[str, str] = field(default_factory=dict)  # "Type/id" -> what was repaired to read it
    seen_types: set[str] = field(default_factory=set)  # every resource type received, read or not
    counted: dict[str, int] = field(default_factory=dict)  # type -> resources no rule reads (not modelled)

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
        """Add a resource once: the same Type/id delivered under two keys counts once."""
        if getattr(resource, "id", None):
            ref = ref_of(resource)
            if ref in self.by_ref:
                return
            self.by_ref[ref] = resource
        if resource.get_resource_type() == "Patient" and self.patient is None:
            self.patient = resource
        self.by_type.setdefault(resource.get_resource_type(), []).append(resource)

    def take(self, reading: Reading, key: str) -> None:
        """Account for one reading: add what was read, name what was skipped."""
        self.seen_types.add(reading.resource_type)
        if reading.resource is None:
            why = f"skipped: {reading.why}"
            if self.unread.get(reading.ref, why) != why:  # another resource of the same Type/id
                self.unread[f"{reading.ref} ({key} #{len(self.unread) + 1})"] = why
            else:
                self.unread[reading.ref] = why
            return
        if reading.state == "lenient":
            self.lenient[reading.ref] = reading.why or "repaired"
        self.add(reading.resource)

    def has_read(self, raw: Any) -> bool:
        """True if this raw resource's Type/id was already read or skipped (answers overlap)."""
        if not (isinstance(raw, dict) and isinstance(raw.get("id"), str) and isinstance(raw.get("resourceType"), str)):
            return False
        ref = f"{raw['resourceType']}/{raw['id']}"
        return ref in self.by_ref or ref in self.unread

    def holds_history(self) -> bool:
        """True if any clinical resource arrived, readable or not (MD-NO-DATA must stay silent)."""
        return any(t in self.seen_types for t in CLINICAL_TYPES)


def _list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else nothing: a wrong type must not stop the call."""
    return value if isinstance(value, list) else []


def _entries(value: Mapping[str, Any]) -> Iterable[Any]:
    """Each entry's resource; a resource put straight into ``entry[]`` (seen in vendor
    examples) is read too rather than lost."""
    for entry in _list(value.get("entry")):
        if isinstance(entry, dict):
            yield entry if "resource" not in entry and "resourceType" in entry else entry.get("resource")


def _failure_of(value: Mapping[str, Any], entries: list[Any] | None = None) -> str | None:
    """The diagnostics of an OperationOutcome answer (bare or inside a Bundle), else None;
    ``entries`` are the Bundle's resources when the caller has listed them already."""
    outcomes = (
        [value]
        if value.get("resourceType") == "OperationOutcome"
        else [
            r
            for r in (entries if entries is not None else _entries(value))
            if isinstance(r, dict) and r.get("resourceType") == "OperationOutcome"
        ]
    )
    for outcome in outcomes:
        for issue in _list(outcome.get("issue")):
            if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
                return str(issue.get("diagnostics") or issue.get("code") or "query failed")
    return None


def add_answer(
    record: PatientRecord, key: str, value: Any, wanted: tuple[str, ...], reach: RuleReach | None = None
) -> None:
    """Put one prefetch (or fetched) answer into the record according to its state; with
    ``reach``, a resource no rule can read is counted rather than modelled."""
    if value is None:
        record.available.add(key)  # "the client has no data": an answer, and it is empty
        return
    if not isinstance(value, dict):
        record.gaps[key] = "prefetch value is not a FHIR resource"
        return
    entries = list(_entries(value)) if value.get("resourceType") == "Bundle" else None
    failure = _failure_of(value, entries)
    if failure is not None:
        record.gaps[key] = f"the query failed: {failure}"
        return
    raw_resources = entries if entries is not None else [value]
    for raw in raw_resources:
        kind = raw.get("resourceType") if isinstance(raw, dict) else None
        if kind == "OperationOutcome" or (wanted and isinstance(kind, str) and kind not in wanted):
            continue  # e.g. the Patient included alongside a searchset, or an OperationOutcome note
        if record.has_read(raw):
            continue  # the same resource under a second key (Observations by category and by code)
        if reach is not None and isinstance(kind, str) and not reach.needs_model(raw):
            record.seen_types.add(kind)
            record.counted[kind] = record.counted.get(kind, 0) + 1
            continue
        record.take(read(raw), key)
    record.available.add(key)


class RecordSource(Protocol):
    """Where missing parts of the record come from (the client's FHIR server)."""

    def query(self, key: str) -> Any: ...

    def complete(self, bundle: dict[str, Any], key: str) -> dict[str, Any]: ...


def next_page_url(value: Any) -> str | None:
    """The ``next`` link of a searchset Bundle page, if there is one."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return None
    return next(
        (
            str(link["url"])
            for link in _list(value.get("link"))
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url")
        ),
        None,
    )


def build_record(
    prefetch: Mapping[str, Any] | None, source: RecordSource | None = None, reach: RuleReach | None = None
) -> PatientRecord:
    """Read every prefetch value, then ask ``source`` for the keys still missing and for the
    further pages of paginated prefetch; ``source`` raises LookupError with the reason.

    Values under keys we did not declare are read too, by resource type: a client that
    names its prefetch differently still gets its data checked. With ``reach`` only the
    resources a rule can read are modelled (the rest counted); without it, all of them."""
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
        add_answer(record, key, value, wanted, reach)
    foreign = any(key not in PREFETCH_QUERIES for key in prefetch)
    for key, (_template, wanted) in PREFETCH_QUERIES.items():
        if key in record.available or key in record.gaps:
            continue
        if key in SUPPLEMENTARY_KEYS and source is None:
            continue  # only a second way to ask for what another key brings
        if foreign and record.of(wanted[0]):
            record.available.add(key)  # delivered under another key
        elif source is None:
            record.gaps[key] = "not provided in prefetch and no FHIR server to ask"
        else:
            try:
                add_answer(record, key, source.query(key), wanted, reach)
            except LookupError as exc:
                record.gaps[key] = str(exc)
    if source is not None:
        _fetch_referenced_medications(record, prefetch, source)
    _set_aside_undated(record)
    _set_aside_unknown_drugs(record)
    if record.unread or record.lenient:
        log.info("read %d resources leniently, skipped %d", len(record.lenient), len(record.unread))
    return record


_OBSERVATION_DATES = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued")


def _set_aside_undated(record: PatientRecord) -> None:
    """An Observation with no date cannot be placed in the rules' windows: it is named as
    skipped, unless a dated panel holds it (``hasMember``) and lends it its date."""
    observations = record.of("Observation")
    undated = [o for o in observations if not any(getattr(o, f, None) for f in _OBSERVATION_DATES)]
    if not undated:
        return
    members = {
        id(record.resolve(ref.reference, panel, "Observation"))
        for panel in observations
        if any(getattr(panel, f, None) for f in _OBSERVATION_DATES)
        for ref in panel.hasMember or ()
    }
    for obs in undated:
        if id(obs) not in members:
            _set_aside(record, obs, "it has no date (effective[x]/issued)")


def _set_aside(record: PatientRecord, resource: Any, why: str) -> None:
    record.by_type[resource.get_resource_type()].remove(resource)
    record.by_ref.pop(ref_of(resource), None)
    record.unread[ref_of(resource)] = f"skipped: {why}"


def _set_aside_unknown_drugs(record: PatientRecord) -> None:
    """A medication record naming its drug only by a reference to a Medication that is neither
    sent nor fetched (and no display) says nothing the rules can read: it is named as skipped."""
    for kind in MEDICATION_USERS:
        for resource in list(record.of(kind)):
            reference = getattr(resource, "medicationReference", None)
            if (
                reference is not None
                and reference.reference
                and not reference.display
                and getattr(resource, "medicationCodeableConcept", None) is None
                and record.resolve(reference.reference, resource, "Medication") is None
            ):
                _set_aside(record, resource, "the Medication it names was not sent and could not be fetched")


def unresolved_medications(record: PatientRecord) -> set[str]:
    """Medication users whose medicationReference points to nothing in the record."""
    missing = set()
    for kind in MEDICATION_USERS:
        for resource in record.of(kind):
            reference = getattr(resource, "medicationReference", None)
            target = reference.reference if reference is not None else None
            if target and record.resolve(target, resource, "Medication") is None:
                missing.add(kind)
    return missing


_KEY_OF = {
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "MedicationAdministration": "medicationAdministrations",
}


def _fetch_referenced_medications(record: PatientRecord, prefetch: Mapping[str, Any], source: RecordSource) -> None:
    """Medications referenced but not sent: ask the server again for that key, whose query
    includes the referenced Medications (``_include``), and keep only those Medications."""
    for kind in sorted(unresolved_medications(record)):
        key = _KEY_OF[kind]
        if key not in prefetch:
            continue  # already fetched from the server, with its _include
        try:
            answer = source.query(key)
        except LookupError as exc:
            record.gaps.setdefault(f"{key} medications", f"referenced Medications could not be fetched: {exc}")
            continue
        if isinstance(answer, dict) and answer.get("resourceType") == "Bundle":
            for raw in _entries(answer):
                if isinstance(raw, dict) and raw.get("resourceType") == "Medication":
                    record.take(read(raw), key)


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
        reading = read(raw)
        if reading.resource is None:
            unreadable.append(UnreadableDraft(reading.ref, reading.why or "invalid", raw))
        else:
            resources.append(reading.resource)
    return resources, unreadable


__all__ = [
    "CLINICAL_TYPES",
    "COMPLETENESS_KEYS",
    "OBSERVATION_CODES_PLACEHOLDER",
    "PREFETCH_QUERIES",
    "PatientRecord",
    "RecordSource",
    "UnreadableDraft",
    "add_answer",
    "build_record",
    "next_page_url",
    "parse_draft_orders",
    "parse_resource",
    "prune_empty",
    "ref_of",
    "unresolved_medications",
]
