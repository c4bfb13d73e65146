"""What every fact family shares: the ``Fact`` type, the per-call context and its indexes.

Why a context: the record is read by several families (conditions, medications, observations,
orders) and each used to ask "is this coding in value set X" again for every set, rescanning
codings and regular expressions. The context answers it once per (system, code) and once per
concept (``CodeIndex``), and remembers which procedures are cryotherapy, so the fact step is
linear in the record's size.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Required, TypedDict, TypeVar, cast

from ..concepts import codings, texts
from ..fhirtime import days_between, to_instant
from ..orders import SystemicHeuristic, detect, detection_key
from ..record import ref_of
from ..terminology import Terminology

_T = TypeVar("_T")


class Fact(TypedDict, total=False):
    """One flat fact as the rules see it: JSON-serialisable (the decision log stores it).

    ``kind`` decides which fields may appear (``cds_hooks.factschema.FACT_SCHEMA``); a field
    whose value is unknown is absent, never None."""

    kind: Required[str]
    id: Required[str]
    ref: str
    label: str
    code: str
    system: str
    date: str
    value_text: str
    sid: str
    # order
    modality: str
    local_code: str
    freeze_s: float
    has_duration: bool
    temp_c: float
    has_temp: bool
    sessions_per_week: float
    sessions_per_course: float
    sessions_per_day: float
    week_load: float
    course_weeks: float
    interval_days: float
    has_indication: bool
    reason_pigment_spot: bool
    reason_acne: bool
    reason_rosacea: bool
    reason_alopecia: bool
    site_hair_bearing: bool
    site_beard_area: bool
    region_known: bool
    site: str
    reason_lesion_check: bool
    reason_melanoma: bool
    lesion: str
    # patient
    gender: str
    age: float
    # condition (the in_* flags) and site
    in_cv: bool
    in_htn: bool
    in_htn_crisis: bool
    in_arr: bool
    in_cardiac_device: bool
    in_electronic_implant: bool
    in_metal_implant: bool
    in_pregnancy: bool
    in_anemia: bool
    in_immuno: bool
    in_dm_any: bool
    in_dm_unctrl: bool
    in_dm_neuro: bool
    in_sensory_loss: bool
    in_pvd: bool
    in_cold_urticaria_text: bool
    in_cold_urticaria_icd: bool
    in_cold_intolerance: bool
    in_cryoglob: bool
    in_raynaud: bool
    in_cold_aggl: bool
    in_wound: bool
    in_resp: bool
    in_seizure: bool
    in_vte: bool
    in_claustrophobia: bool
    in_hypothyroid: bool
    in_gi_bleed: bool
    in_rosacea: bool
    in_anticoag_use: bool
    in_antiplt_use: bool
    in_nsaid_use: bool
    in_chemo: bool
    in_immsup_use: bool
    in_wound_acute: bool
    in_resp_acute: bool
    in_ctd: bool
    in_lesion_check: bool
    in_melanoma: bool
    onset_days_ago: float
    site_match: str
    region: str
    clinical_status: str
    # medication
    med_anticoag: bool
    med_antiplt: bool
    med_nsaid: bool
    med_chemo: bool
    med_immsup: bool
    med_glucocorticoid: bool
    med_vaso: bool
    med_cns: bool
    current: bool
    days_before_treatment: float
    stop_date_recorded: bool
    # device, allergy
    cardiac_device: bool
    electronic_implant: bool
    metal_implant: bool
    cold_text: bool
    cold_urticaria_text: bool
    raynaud_text: bool
    # lab, bp, exam, pregnancy
    test: str
    value: float
    days_ago: float
    positive: bool
    sbp: float
    dbp: float
    polarity: str
    superseded: bool
    informative: bool
    # procedure, planned, prior course
    cryo: bool
    hours_apart: float
    days_apart: float
    pt: bool
    laser: bool
    peel: bool
    chemo: bool
    days_after_treatment: float
    most_recent: bool
    authored_days_ago: float
    freq_delta: float
    # record
    history_empty: bool


class CodeIndex:
    """Value-set membership of this call's codes and concepts, each computed once.

    ``sets_of(concept)`` is the set of value-set ids any coding of the concept belongs to;
    a concept is keyed by identity, which is stable while the record it belongs to lives."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self._concepts: dict[int, tuple[Any, frozenset[str]]] = {}
        self._derived: dict[tuple[Hashable, int], tuple[Any, Any]] = {}

    def derived(self, name: Hashable, concept: Any, compute: Callable[[Any], _T]) -> _T:
        """``compute(concept)``, once per concept and ``name`` in this call. What a fact
        family makes of a code alone (its flags) is asked again for every resource holding
        that code, and the reader gives resources with the same code one shared concept; the
        result must not be modified."""
        key = (name, id(concept))
        hit = self._derived.get(key)
        if hit is not None and hit[0] is concept:
            value: _T = hit[1]
            return value
        value = compute(concept)
        self._derived[key] = (concept, value)  # the concept is held, so its id is not reused
        return value

    def sets_of(self, concept: Any) -> frozenset[str]:
        if concept is None:
            return frozenset()
        key = id(concept)
        hit = self._concepts.get(key)
        if hit is not None and hit[0] is concept:
            return hit[1]
        found: frozenset[str] = frozenset()
        for system, code, _display in codings(concept):
            found = found | self.terminology.memberships(system, code)
        self._concepts[key] = (concept, found)  # the concept is held, so its id is not reused
        return found

    def in_set(self, concept: Any, vs_id: str, *, with_text: bool = False) -> bool:
        """``concepts.in_set`` through the index: a coding in the set, or (optionally) its text."""
        if vs_id in self.sets_of(concept):
            return True
        if not with_text:
            return False
        value_set = self.terminology[vs_id]
        return any(value_set.matches_text(t) for t in texts(concept))

    def first_code(self, concept: Any, vs_id: str) -> tuple[str, str, str | None] | None:
        """The first coding of the concept that is in the value set."""
        if vs_id not in self.sets_of(concept):
            return None
        for system, code, display in codings(concept):
            if vs_id in self.terminology.memberships(system, code):
                return system, code, display
        return None


@dataclass(frozen=True)
class FactContext:
    """What every fact family needs: the terminology, the clock and the order's date."""

    terminology: Terminology
    now: datetime
    treatment: datetime
    ids: Iterator[int]  # an itertools.count shared by one request's facts
    systemic: SystemicHeuristic  # classifies past sessions like the order (same modality?)
    supply_days: float = 30.0  # F-MED last taken without a stop date: start + this (§10.1)
    codes: CodeIndex = field(init=False, repr=False, compare=False)
    _cryo: dict[tuple[Any, ...], bool] = field(init=False, repr=False, compare=False, default_factory=dict)
    _cryo_of: dict[int, tuple[Any, bool]] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", CodeIndex(self.terminology))

    def new_fact(self, kind: str, resource: Any | None = None, **fields: Any) -> Fact:
        """A fact with a fresh id; fields whose value is unknown (None) are left out."""
        fact: dict[str, Any] = {"kind": kind, "id": f"f{next(self.ids)}"}
        if resource is not None:
            fact["ref"] = ref_of(resource)
        fact.update((k, v) for k, v in fields.items() if v is not None)
        return cast(Fact, fact)

    def days_ago(self, when: datetime) -> float:
        return round(days_between(when, self.now), 4)

    def in_set(self, concept: Any, vs_id: str, *, with_text: bool = False) -> bool:
        return self.codes.in_set(concept, vs_id, with_text=with_text)

    def is_cryotherapy(self, resource: Any) -> bool:
        """Cryotherapy by code or text, whatever the resource's status (past sessions); asked
        by the order fact and the interval facts, and a record repeats the same procedures,
        so remembered by what ``detect`` reads."""
        seen = self._cryo_of.get(id(resource))
        if seen is not None and seen[0] is resource:
            return seen[1]  # the same resource asked again (the order fact, then the interval facts)
        key = detection_key(resource)
        found = self._cryo.get(key)
        if found is None:
            found = self._cryo[key] = detect(resource, self.terminology, any_status=True) is not None
        self._cryo_of[id(resource)] = (resource, found)
        return found


def performed_time(procedure: Any) -> datetime | None:
    """performed[x]; a Period counts at its end (catalogue IV-PT-4H)."""
    if procedure.performedDateTime is not None:
        return to_instant(procedure.performedDateTime)
    period = procedure.performedPeriod
    return to_instant(period.end or period.start) if period is not None else None
