"""Which raw resources a rule can read, decided from the JSON alone (issue 15).

Validating a resource with fhir.resources costs far more than reading its JSON, and a
whole-patient record is mostly Observations no rule reads (smoking status, body weight, pain
scores...) and types no rule reads (Encounter, Claim, Immunization...). Those are counted,
not modelled. The decision is conservative: a resource is left out only when its JSON shows
plainly that no rule can use it; anything doubtful (an odd code structure, a missing status or
date that would make the full reading name it in MD-INCOMPLETE) is read as before, so nothing
that might matter is skipped silently.

What "a rule can read" means here is taken from the modules that read the record: the
Observation value sets come from ``prefetch.OBSERVATION_SETS`` (facts/observations.py reads exactly
those), the resource types from ``lenient.NEEDS`` (one entry per type the facts read), and a
resource of any type whose code carries an ICD-10-CM coding is kept because an order's
``reasonReference`` may point to it.
"""

from __future__ import annotations

import re
from typing import Any

from .lenient import NEEDS, date_candidates
from .prefetch import OBSERVATION_SETS
from .terminology import ICD10CM, Terminology, normalise_system

# Observation.status codes (FHIR R4 observation-status): any other value would be named as unreadable.
OBSERVATION_STATUSES = frozenset(
    ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown")
)
_OBSERVATION_DATES = ("effectiveDateTime", "effectiveInstant", "issued")
READ_TYPES = frozenset(NEEDS)
_TEXT_OR_NONE = (str, type(None))
# Codes come from outside and are unbounded: the memos are emptied when they reach this size.
_MEMO_LIMIT = 65_536
# A plainly valid FHIR date/dateTime/instant: the common case, told without the repair parser.
_PLAIN_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?")
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else i for i in range(256))  # b"0".."9" -> b"0"
_plain_shapes: dict[bytes, bool] = {}
_SHAPE_MAX = 40  # longer than any plain date with a fraction of 12 digits: not remembered
_SHAPES_LIMIT = 1_024


class RuleReach:
    """Tells, per raw resource, whether it must be modelled or can only be counted.

    One instance per pipeline (it holds the Observation value sets); the per-code answers are
    memoised because a record repeats the same few dozen codes hundreds of times."""

    def __init__(self, terminology: Terminology) -> None:
        self._sets = [terminology[vs_id] for vs_id in OBSERVATION_SETS]
        self._observation_code: dict[tuple[str, str], bool] = {}
        self._single_coding: dict[tuple[str | None, str | None], bool] = {}

    def needs_model(self, raw: Any) -> bool:
        """False only for a resource no rule can read; True whenever in doubt."""
        if not isinstance(raw, dict):
            return True  # the full reading names it (not a FHIR resource)
        kind = raw.get("resourceType")
        if not isinstance(kind, str) or "contained" in raw:
            return True
        if kind == "Observation":
            return self._observation_matters(raw)
        if kind in READ_TYPES:
            return True
        codes = _codings(raw.get("code"))
        return codes is None or any(system == ICD10CM for system, _code in codes)

    def _observation_matters(self, raw: dict[str, Any]) -> bool:
        if "hasMember" in raw:
            return True  # a panel lends its date to members
        if self._codes_matter(raw):
            return True
        return not _looks_readable(raw)  # an unreadable one must be modelled, to be named

    def _codes_matter(self, raw: dict[str, Any]) -> bool:
        """True when a code (or a component's) is one a rule reads, or the codes are not in
        the plain shape; memoised whole for the usual Observation, one coding and no components."""
        code = raw.get("code")
        if "component" not in raw and type(code) is dict:
            coding = code.get("coding")
            if type(coding) is list and len(coding) == 1 and type(coding[0]) is dict:
                key = (coding[0].get("system"), coding[0].get("code"))
                if type(key[0]) in _TEXT_OR_NONE and type(key[1]) in _TEXT_OR_NONE:
                    known = self._single_coding.get(key)
                    if known is None:
                        if len(self._single_coding) >= _MEMO_LIMIT:
                            self._single_coding.clear()
                        known = self._single_coding[key] = self._codes_in_full_matter(raw)
                    return known
        return self._codes_in_full_matter(raw)

    def _codes_in_full_matter(self, raw: dict[str, Any]) -> bool:
        codes = _codings(raw.get("code"))
        if not codes:
            return True
        components = raw.get("component")
        if components is not None:
            if not isinstance(components, list):
                return True
            for component in components:
                more = _codings(component.get("code")) if isinstance(component, dict) else None
                if more is None:
                    return True
                codes.extend(more)
        return any(self._code_read(system, code) for system, code in codes)

    def _code_read(self, system: str, code: str) -> bool:
        key = (system, code)
        known = self._observation_code.get(key)
        if known is None:
            known = system == ICD10CM or any(vs.has_code(system, code) for vs in self._sets)
            if len(self._observation_code) >= _MEMO_LIMIT:
                self._observation_code.clear()
            self._observation_code[key] = known
        return known


def _codings(concept: Any) -> list[tuple[str, str]] | None:
    """(system, code) of every coding of a raw CodeableConcept; None when its shape is not
    the plain one (then the caller models the resource rather than guess)."""
    if concept is None:
        return []
    if not isinstance(concept, dict):
        return None
    coding = concept.get("coding")
    if coding is None:
        return []
    if not isinstance(coding, list):
        return None
    out = []
    for item in coding:
        if not isinstance(item, dict):
            return None
        system, code = item.get("system"), item.get("code")
        if not isinstance(system, (str, type(None))) or not isinstance(code, (str, type(None))):
            return None
        if code and code.strip():
            out.append((normalise_system(system), code.strip()))
    return out


def _readable_date(value: Any) -> bool:
    return isinstance(value, str) and (_plain_date(value) or bool(date_candidates(value)))


def _plain_date(value: str) -> bool:
    """``_PLAIN_DATE.fullmatch(value)``, decided once per shape: the pattern's digits are any
    digits, so ASCII digits written as "0" change nothing, and the thousands of dates of a
    record have a handful of shapes (bytes.translate costs a quarter of the match)."""
    if len(value) > _SHAPE_MAX:
        return _PLAIN_DATE.fullmatch(value) is not None
    try:
        shape = value.encode().translate(_DIGITS_AS_ZERO)
    except UnicodeEncodeError:  # a lone surrogate
        return _PLAIN_DATE.fullmatch(value) is not None
    known = _plain_shapes.get(shape)
    if known is None:
        if len(_plain_shapes) >= _SHAPES_LIMIT:
            _plain_shapes.clear()
        known = _plain_shapes[shape] = _PLAIN_DATE.fullmatch(shape.decode()) is not None
    return known


def _looks_readable(raw: dict[str, Any]) -> bool:
    """True when the full reading would keep the Observation (a known status and a date),
    so that leaving it out cannot hide one that MD-INCOMPLETE would have named."""
    status = raw.get("status")
    if not isinstance(status, str) or status not in OBSERVATION_STATUSES:
        return False
    for name in _OBSERVATION_DATES:
        if _readable_date(raw.get(name)):
            return True
    period = raw.get("effectivePeriod")
    return isinstance(period, dict) and any(_readable_date(period.get(end)) for end in ("start", "end"))
