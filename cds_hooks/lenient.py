"""Reading one raw FHIR resource: strictly when it is valid R4B, leniently when it is not.

Real EHR traffic often fails strict R4B validation for reasons that do not touch what the
rules read (a dateTime without a time-zone offset, ``coding: [{}]``, one object where a
list is due). Such a resource is repaired on its raw JSON and read; only a resource whose
*needed* fields (``NEEDS``: its code, status or date) cannot be read is skipped, and the
reason is returned so the caller can name it. Nothing here raises on bad input.

``NEEDS`` is also the contract of the "raw resource -> fields the rules read" layer:
``needed_fields`` answers from the raw dict alone, without building a model.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["read", "lenient", "skipped"]
MAX_ROUNDS = 12


@dataclass(frozen=True)
class Need:
    """One thing the rules must read: any of ``fields`` (a choice type or alternatives)."""

    what: Literal["code", "status", "date"]
    fields: tuple[str, ...]
    required: bool  # absent altogether -> the resource cannot be used (skipped, named)


def _n(what: Literal["code", "status", "date"], *fields: str, required: bool = False) -> Need:
    return Need(what, fields, required)


_MED = ("medicationCodeableConcept", "medicationReference")
# Resource type -> what the rules need from it (documented in rules/README.md, kept in step by a test).
NEEDS: dict[str, tuple[Need, ...]] = {
    "Patient": (_n("date", "birthDate"),),
    "Condition": (
        _n("code", "code", required=True),
        _n("status", "clinicalStatus"),
        _n("status", "verificationStatus"),
        _n("date", "onsetDateTime", "onsetPeriod", "recordedDate"),
        _n("date", "abatementDateTime", "abatementPeriod"),
    ),
    "Observation": (
        _n("code", "code", required=True),
        _n("status", "status", required=True),
        # required too, but checked by record.py: a panel member takes the panel's date
        _n("date", "effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued"),
    ),
    "MedicationRequest": (
        _n("code", *_MED, required=True),
        _n("status", "status", required=True),
        _n("date", "authoredOn"),
    ),
    "MedicationStatement": (
        _n("code", *_MED, required=True),
        _n("status", "status", required=True),
        _n("date", "effectiveDateTime", "effectivePeriod", "dateAsserted"),
    ),
    "MedicationAdministration": (
        _n("code", *_MED, required=True),
        _n("status", "status", required=True),
        _n("date", "effectiveDateTime", "effectivePeriod", required=True),
    ),
    "Medication": (_n("code", "code", "ingredient", required=True),),
    "AllergyIntolerance": (
        _n("code", "code", required=True),
        _n("status", "clinicalStatus"),
        _n("status", "verificationStatus"),
        _n("date", "recordedDate", "onsetDateTime"),
    ),
    "Device": (_n("code", "type", required=True), _n("status", "status")),
    "DeviceUseStatement": (_n("code", "device", required=True), _n("status", "status", required=True)),
    "Procedure": (
        _n("code", "code", required=True),
        _n("status", "status", required=True),
        _n("date", "performedDateTime", "performedPeriod"),
    ),
    "ServiceRequest": (
        _n("code", "code", required=True),
        _n("status", "status", required=True),
        _n("date", "authoredOn", "occurrenceDateTime", "occurrencePeriod"),
    ),
    "Appointment": (_n("status", "status", required=True), _n("date", "start")),
}
# Required elements the rules never read: a placeholder lets the rest of the resource be read.
_PLACEHOLDERS: dict[str, Any] = {
    "subject": {"display": "not recorded"},
    "patient": {"display": "not recorded"},
    "intent": "unknown",
    "participant": [{"status": "needs-action"}],
}
_DATE_TEXT = re.compile(
    r"^\s*(\d{4})(?:-?(\d{2}))?(?:-?(\d{2}))?"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2}|[+-]\d{2})?)?\s*$"
)
_REFERENCE_TEXT = re.compile(r"^(#[A-Za-z0-9.-]+|([A-Za-z][A-Za-z]+/[A-Za-z0-9.-]+)(/_history/\S+)?|(https?|urn):\S+)$")


_ZONE = re.compile(r"(Z|[+-]\d{2}:?\d{2})\s*$")


@dataclass
class Reading:
    """The outcome for one raw resource: the model (None when skipped) and what was done."""

    resource_type: str
    ref: str
    state: State
    resource: Any | None = None
    notes: list[str] = field(default_factory=list)  # repairs (lenient) or the reason (skipped)

    @property
    def why(self) -> str:
        return "; ".join(self.notes)


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


def raw_ref(raw: Any, fallback: str = "resource") -> str:
    """'Type/id' of a raw resource, or its type alone."""
    if not isinstance(raw, dict):
        return fallback
    kind = raw.get("resourceType") if isinstance(raw.get("resourceType"), str) else fallback
    rid = raw.get("id")
    return f"{kind}/{rid}" if isinstance(rid, (str, int)) and str(rid) else str(kind)


def date_candidates(text: str) -> list[str]:
    """Valid FHIR spellings of a date-like string, most faithful first: the dateTime (no offset
    read as UTC, the §1 Clock convention), the date alone, and the instant at midnight UTC."""
    match = _DATE_TEXT.match(re.sub(r"\s*:\s*", ":", text))  # "16: 09: 08" (a real vendor example)
    if not match:
        return []
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    date = year + (f"-{month}" if month else "") + (f"-{day}" if month and day else "")
    out: list[str] = []
    if hour is not None and month and day:
        if zone is None or zone == "Z":
            zone_text = "Z"
        else:
            digits = zone[1:].replace(":", "")
            zone_text = f"{zone[0]}{digits[:2]}:{(digits[2:] or '00')}"
        out.append(f"{date}T{int(hour):02d}:{minute}:{second or '00'}{fraction or ''}{zone_text}")
    out.append(date)
    if month and day:
        out.append(f"{date}T00:00:00Z")
    return out


def _step(container: Any, key: Any) -> Any:
    if isinstance(container, dict) and isinstance(key, str):
        return container.get(key)
    if isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container):
        return container[key]
    return None


def _resolve(root: dict[str, Any], loc: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """(parent, key) of the deepest element of ``loc`` present in ``root``."""
    parent: Any = None
    key: Any = None
    node: Any = root
    for part in loc:
        child = _step(node, part)
        if child is None:
            break
        parent, key, node = node, part, child
    return (parent, key) if parent is not None else None


def _loc_of(error: Mapping[str, Any]) -> tuple[Any, ...]:
    loc = tuple(error.get("loc") or ())
    return loc[:-1] if loc and loc[-1] == "root" else loc


def _sort_key(loc: tuple[Any, ...]) -> tuple[tuple[int, int, str], ...]:
    return tuple((1, p, "") if isinstance(p, int) else (0, 0, str(p)) for p in loc)


def _is_missing(error: Mapping[str, Any]) -> bool:
    """A required element absent: pydantic's ``missing`` or fhir_core's ``model_field_validation.missing``
    (a required primitive inside an element, e.g. Narrative.status)."""
    return str(error.get("type") or "").split(".")[-1] == "missing"


def _repair_words(value: str, candidate: Any) -> str:
    if not isinstance(candidate, str):
        return "was text where a structure is due"
    if date_candidates(value):
        if "T" in candidate and not _ZONE.search(value):
            return "has no time-zone offset (read as UTC)"
        return "written in a non-standard date form"
    return "had stray spaces"


class _Repair:
    """One resource's repair: fixes the raw copy error by error, noting what it did."""

    def __init__(self, work: dict[str, Any]):
        self.work = work
        self.notes: list[str] = []
        self.tried: dict[tuple[Any, ...], list[Any]] = {}
        self.fatal: str | None = None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def apply(self, errors: list[Any]) -> None:
        deletions: list[tuple[Any, ...]] = []
        for error in errors:
            loc = _loc_of(error)
            if not loc:
                self.fatal = str(error.get("msg") or "invalid")
                return
            if self._fix(error, loc):
                continue
            if _is_missing(error):
                if len(loc) == 1:
                    self.fatal = f"required {loc[0]} missing"
                    return
                self.note(f"incomplete {'.'.join(str(p) for p in loc[:-1])} ignored")
                deletions.append(loc[:-1])
            else:
                deletions.append(loc)
        for loc in sorted(set(deletions), key=_sort_key, reverse=True):
            self._delete(loc)

    def _fix(self, error: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
        """Replace the value at ``loc`` with a repaired one; False when it must go instead."""
        kind = str(error.get("type") or "")
        path = ".".join(str(p) for p in loc)
        if _is_missing(error):
            if len(loc) == 1 and loc[0] in _PLACEHOLDERS and loc[0] not in self.work:
                self.work[loc[0]] = copy.deepcopy(_PLACEHOLDERS[loc[0]])
                self.note(f"required {loc[0]} missing")
                return True
            return False
        found = _resolve(self.work, loc)
        if found is None or found[1] != loc[-1]:
            return False
        parent, key = found
        value = parent[key]
        tried = self.tried.setdefault(loc, [])
        tried.append(value)
        if kind == "extra_forbidden":
            self.note(f"unknown element {path} ignored")
            return False
        if kind == "list_type" and not isinstance(value, list):
            parent[key] = [value]
            self.note(f"{path} given once where a list is due")
            return True
        if (
            isinstance(value, list)
            and value
            and kind in ("model_validation_format", "model_type", "dict_type", "string_type", "json_invalid")
        ):
            parent[key] = value[0]
            self.note(f"{path} given as a list where one value is due (first one read)")
            return True
        if isinstance(value, str):
            for candidate in self._string_candidates(value):
                if candidate not in tried:
                    parent[key] = candidate
                    self.note(f"{path} {_repair_words(value, candidate)}")
                    return True
        self.note(f"unreadable {path} ignored")
        return False

    @staticmethod
    def _string_candidates(value: str) -> list[Any]:
        out: list[Any] = list(date_candidates(value))
        collapsed = " ".join(value.split())
        if collapsed != value:
            out.append(collapsed)
        if _REFERENCE_TEXT.match(value.strip()):
            out.append({"reference": value.strip()})
        out.append({"text": value})
        return out

    def _delete(self, loc: tuple[Any, ...]) -> None:
        found = _resolve(self.work, loc)
        if found is None:
            return
        parent, key = found
        if key != loc[-1] and isinstance(parent, dict):
            return  # the erroneous part is already gone
        if isinstance(parent, list):
            parent.pop(key)
        else:
            parent.pop(key, None)


def present(value: Any, what: str) -> bool:
    """True if a needed element holds something readable (a code or text, a reference, a date)."""
    if value is None:
        return False
    if what == "code" and isinstance(value, dict):
        codes = [c for c in value.get("coding") or () if isinstance(c, dict) and c.get("code")]
        return bool(codes or value.get("text") or value.get("reference") or value.get("display"))
    if what == "code" and isinstance(value, list):  # Medication.ingredient
        return any(
            present(item.get("itemCodeableConcept") or item.get("itemReference"), "code")
            for item in value
            if isinstance(item, dict)
        )
    if what == "status" and isinstance(value, dict):
        return any(isinstance(c, dict) and c.get("code") for c in value.get("coding") or ())
    if what == "date" and isinstance(value, dict):  # Period
        return bool(value.get("start") or value.get("end"))
    return bool(value)


def needed_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The needed elements present in a raw resource (name -> raw value), from JSON alone."""
    return {
        name: raw[name]
        for need in NEEDS.get(str(raw.get("resourceType")), ())
        for name in need.fields
        if raw.get(name) not in (None, "", [], {})
    }


def _lost_needs(kind: str, original: Mapping[str, Any], repaired: Mapping[str, Any]) -> list[str]:
    problems = []
    for need in NEEDS.get(kind, ()):
        had = [f for f in need.fields if original.get(f) not in (None, "", [], {})]
        has = [f for f in need.fields if present(repaired.get(f), need.what)]
        if has:
            continue
        if had:
            problems.append(f"its {need.what} ({'/'.join(had)}) could not be read")
        elif need.required:
            problems.append(f"it has no {need.what} ({'/'.join(need.fields)})")
    return problems


def read_resource(raw: Any) -> Reading:
    """Strict R4B first; else repair and read leniently; else skip with the reason. Never raises."""
    # Imported here: a worker whose records all read plainly (plainread.py) never loads the
    # R4B models and pydantic (~18 MB, ~0.3 s).
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(raw, dict) or not isinstance(raw.get("resourceType"), str):
        return Reading("resource", raw_ref(raw), "skipped", notes=["not a FHIR resource (no resourceType)"])
    kind, ref = raw["resourceType"], raw_ref(raw)
    try:
        model_class = get_fhir_model_class(kind)
    except (KeyError, ValueError, AttributeError):
        return Reading(kind, ref, "skipped", notes=[f"unknown resource type {kind!r}"])
    original = prune_empty(raw)
    try:
        resource = model_class.model_validate(original)
        state: State = "read"
        repair = _Repair(original)
    except (ValidationError, ValueError, TypeError) as exc:
        repair = _Repair(copy.deepcopy(original))
        resource = None
        errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
        for _round in range(MAX_ROUNDS):
            repair.apply(errors)
            if repair.fatal is not None:
                break
            repair.work = prune_empty(repair.work)
            try:
                resource = model_class.model_validate(repair.work)
                break
            except ValidationError as again:
                errors = again.errors()
            except (ValueError, TypeError) as again:
                repair.fatal = str(again)[:120]
                break
        if resource is None:
            lost = _lost_needs(kind, original, repair.work)
            reason = repair.fatal or "too many invalid elements"
            return Reading(kind, ref, "skipped", notes=lost or [f"not valid FHIR R4 and could not be read ({reason})"])
        state = "lenient"
    lost = _lost_needs(kind, original, repair.work)
    if lost:
        return Reading(kind, ref, "skipped", notes=lost)
    return Reading(kind, ref, state, resource, repair.notes if state == "lenient" else [])
