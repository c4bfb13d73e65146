"""Medication facts: which drug class, and whether it is current or when it was last taken.

Implements catalogue §1 F-MED and the four ways of medication matching (ingredient code,
product code, ATC prefix, ingredient name in the text) through medicationCodeableConcept,
a contained Medication or one referenced in the record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .concepts import codings, label, texts
from .fhirtime import UNIT_DAYS, days_between, to_instant
from .orders import CryoOrder
from .record import PatientRecord, ref_of
from .terminology import SNOMED, ValueSet

if TYPE_CHECKING:
    from .facts import Fact, FactContext

MEDICATION_CLASSES = {
    "med_anticoag": "MED-ANTICOAG",
    "med_antiplt": "MED-ANTIPLT",
    "med_nsaid": "MED-NSAID",
    "med_chemo": "MED-CHEMO",
    "med_immsup": "MED-IMMSUP",
    "med_vaso": "MED-VASO",
    "med_cns": "MED-CNS",
}
_IGNORED = {"cancelled", "entered-in-error", "not-taken", "unknown", "not-done", "draft"}
# DI-IMMSUP counts *systemic* glucocorticoids (ATC H02AB; VSAC "Glucocorticoids (oral only)"): an
# ingredient code or name also matches eye drops, creams and inhalers, which do not suppress immunity.
# SNOMED routes: topical, ophthalmic, otic, nasal, respiratory tract, vaginal.
_LOCAL_ROUTES = {"6064005", "54485002", "10547007", "46713006", "447694001", "16857009"}
_LOCAL_FORM = re.compile(r"\b(topical|cutaneous|cream|ointment|lotion|ophthalmic|eye|otic|ear|nasal|"
                         r"inhal\w*|vaginal)\b", re.IGNORECASE)


def _concepts(resource: Any, record: PatientRecord) -> list[Any]:
    """The drug's CodeableConcepts: the medication itself and its ingredients."""
    concept = getattr(resource, "medicationCodeableConcept", None)
    if concept is not None:
        return [concept]
    reference = getattr(resource, "medicationReference", None)
    medication = record.resolve(reference.reference if reference else None, resource, "Medication")
    if medication is None:
        return [reference] if reference is not None and reference.display else []
    found = [medication.code] if medication.code is not None else []
    found += [i.itemCodeableConcept for i in medication.ingredient or () if i.itemCodeableConcept]
    return found


def _locally_applied(resource: Any, concepts: Sequence[Any], record: PatientRecord) -> bool:
    """True if the route, dose form or drug text says the drug is applied locally (not systemic)."""
    dosages = getattr(resource, "dosageInstruction", None) or getattr(resource, "dosage", None) or []
    routes = [d.route for d in (dosages if isinstance(dosages, list) else [dosages]) if d.route is not None]
    reference = getattr(resource, "medicationReference", None)
    medication = record.resolve(reference.reference if reference else None, resource, "Medication")
    forms = [medication.form] if medication is not None and medication.form is not None else []
    if any(system == SNOMED and code in _LOCAL_ROUTES for system, code, _d in codings(routes)):
        return True
    return any(_LOCAL_FORM.search(t) for t in texts(list(concepts) + routes + forms))


def drug_class_match(concepts: Sequence[Any], value_set: ValueSet) -> str | None:
    """The drug name if any concept is in the class by any of the four ways, else None."""
    all_texts = [t for c in concepts for t in texts(c)]
    for concept in concepts:
        for system, code, display in codings(concept):
            if value_set.has_code(system, code):
                name = value_set.ingredient_in_text(display or "") or value_set.display_for(system, code)
                name = name or next(filter(None, map(value_set.ingredient_in_text, all_texts)), None)
                return name or display or label(concept, code)
    for text in all_texts:
        name = value_set.ingredient_in_text(text)
        if name:
            return name
    return None


def _last_taken(resource: Any) -> datetime | None:
    """The catalogue's 'last taken' for a stopped/completed medication record."""
    kind = resource.get_resource_type()
    candidates: list[datetime | None] = []
    if kind == "MedicationRequest":
        for dosage in resource.dosageInstruction or ():
            repeat = dosage.timing.repeat if dosage.timing else None
            if repeat is not None and repeat.boundsPeriod is not None:
                candidates.append(to_instant(repeat.boundsPeriod.end))
        dispense = resource.dispenseRequest
        authored = to_instant(resource.authoredOn)
        if dispense is not None:
            if dispense.validityPeriod is not None:
                candidates.append(to_instant(dispense.validityPeriod.end))
            supply = dispense.expectedSupplyDuration
            if supply is not None and supply.value is not None and authored is not None:
                days = float(supply.value) * UNIT_DAYS.get(supply.code or supply.unit or "d", 1)
                try:
                    candidates.append(authored + timedelta(days=days))
                except OverflowError:  # a supply running past year 9999 tells us nothing
                    pass
        fallback = authored
    elif kind == "MedicationStatement":
        period = resource.effectivePeriod
        candidates += [to_instant(period.end) if period else None, to_instant(resource.effectiveDateTime)]
        fallback = to_instant(resource.dateAsserted)
    else:  # MedicationAdministration
        period = resource.effectivePeriod
        candidates += [to_instant(period.end or period.start) if period else None,
                       to_instant(resource.effectiveDateTime)]
        fallback = None
    known = [c for c in candidates if c is not None]
    return max(known) if known else fallback


def _status_and_time(resource: Any, drafted: bool, now: datetime) -> tuple[bool, datetime | None] | None:
    """(current, last taken) per F-MED, or None when the record does not count."""
    kind = resource.get_resource_type()
    status = resource.status
    if kind == "MedicationRequest":
        if drafted or status in ("active", "on-hold"):
            return True, None
    elif kind == "MedicationStatement":
        if status in ("active", "intended", "on-hold"):
            return True, None
    elif kind == "MedicationAdministration":
        if status in ("entered-in-error", "not-done", "unknown"):
            return None
        taken = _last_taken(resource)
        if taken is not None and now - timedelta(hours=24) <= taken:
            return True, taken
        return False, taken
    if status in _IGNORED:
        return None
    return False, _last_taken(resource)


def _medications(record: PatientRecord, drafts: Sequence[Any], order: CryoOrder) -> Iterator[tuple[Any, bool]]:
    for kind in ("MedicationRequest", "MedicationStatement", "MedicationAdministration"):
        for resource in record.of(kind):
            yield resource, False
    for resource in drafts:
        if resource.get_resource_type() == "MedicationRequest" and ref_of(resource) != order.ref:
            yield resource, True


def medication_facts(record: PatientRecord, drafts: Sequence[Any], order: CryoOrder,
                     ctx: FactContext) -> list[Fact]:
    tx = ctx.terminology
    glucocorticoids = tx["MED-IMMSUP.glucocorticoid"]
    facts = []
    for resource, drafted in _medications(record, drafts, order):
        state = _status_and_time(resource, drafted, ctx.now)
        if state is None:
            continue
        concepts = _concepts(resource, record)
        if not concepts:
            continue
        flags: dict[str, bool] = {}
        names: dict[str, str] = {}  # drug name per matched class, in class order
        for flag, vs_id in MEDICATION_CLASSES.items():
            name = drug_class_match(concepts, tx[vs_id])
            if name:
                flags[flag] = True
                names[flag] = name
        steroid = drug_class_match(concepts, glucocorticoids)
        if steroid and _locally_applied(resource, concepts, record):
            steroid = None
        if steroid:  # a systemic glucocorticoid (also listed in the MED-IMMSUP expansion) counts as one
            flags["med_glucocorticoid"] = True
            flags.pop("med_immsup", None)
            names.pop("med_immsup", None)
            names["med_glucocorticoid"] = steroid
        if not flags:
            continue
        drug = next(iter(names.values()), None)
        current, taken = state
        first = next(iter(codings(concepts[0])), None)
        facts.append(ctx.new_fact(
            "medication", resource, **flags, current=current,
            days_before_treatment=round(days_between(taken, ctx.treatment), 4) if taken and not current else None,
            label=drug or label(concepts[0]), date=taken.date().isoformat() if taken else None,
            system=first[0] if first else None, code=first[1] if first else None,
            value_text="current" if current else "stopped",
        ))
    return facts
