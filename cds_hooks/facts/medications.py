"""Medication facts: which drug class, and whether it is current or when it was last taken.

Implements catalogue §1 F-MED and the four ways of medication matching (ingredient code,
product code, ATC prefix, ingredient name in the text) through medicationCodeableConcept,
a contained Medication or one referenced in the record (the Reference's ``display`` counts as
text). Catalogue §10.1: a drug's classes come from its ingredients however it was recognised
(methotrexate by RxNorm, product, either ATC code or name is MED-CHEMO and MED-IMMSUP), and a
stopped drug with no recorded stop date is taken as last taken at the latest plausible time
(``stop_date_recorded: false`` on the fact, for the card to say so).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from ..concepts import codings, label, texts
from ..fhirtime import UNIT_DAYS, days_between, to_instant
from ..orders import CryoOrder
from ..record import PatientRecord, ref_of
from ..terminology import ATC, SNOMED, Terminology, ValueSet
from .context import Fact, FactContext

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
_LOCAL_FORM = re.compile(
    r"\b(topical|cutaneous|cream|ointment|lotion|ophthalmic|eye|otic|ear|nasal|"
    r"inhal\w*|vaginal)\b",
    re.IGNORECASE,
)


def _concepts(resource: Any, record: PatientRecord) -> list[Any]:
    """The drug's CodeableConcepts: the medication itself and its ingredients, and the words of
    the Reference (its ``display``) that named it."""
    concept = getattr(resource, "medicationCodeableConcept", None)
    if concept is not None:
        return [concept]
    reference = getattr(resource, "medicationReference", None)
    if reference is None:
        return []
    found: list[Any] = [_Words(str(reference.display))] if reference.display else []
    medication = record.resolve(reference.reference, resource, "Medication")
    if medication is not None:
        found += [medication.code] if medication.code is not None else []
        for ingredient in medication.ingredient or ():
            if ingredient.itemCodeableConcept is not None:
                found.append(ingredient.itemCodeableConcept)
            elif ingredient.itemReference is not None and ingredient.itemReference.display:
                found.append(_Words(str(ingredient.itemReference.display)))
    return found


class _Words:
    """Free text standing in for a CodeableConcept (a Reference's display): text, no codings."""

    coding: tuple[Any, ...] = ()

    def __init__(self, text: str):
        self.text = text


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


def drug_ingredients(concepts: Sequence[Any], classes: Sequence[ValueSet]) -> list[str]:
    """The ingredient names a drug is known to contain, by any way: an ingredient or product
    code of a class (its display names the ingredient), an ATC substance code, or the text."""
    found: list[str] = []
    words = [t for c in concepts for t in texts(c)]
    for concept in concepts:
        for system, code, _display in codings(concept):
            for vs in classes:
                if system == ATC and code.strip().upper() in vs.ingredient_atc:
                    found.append(vs.ingredient_atc[code.strip().upper()])
                elif vs.has_code(system, code):
                    words.append(vs.display_for(system, code) or "")
    for vs in classes:
        for text in words:
            found += vs.ingredients_in_text(text)
    return list(dict.fromkeys(found))


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


def _plus_days(start: datetime, days: float) -> datetime | None:
    try:
        return start + timedelta(days=days)
    except OverflowError:  # a supply running past year 9999 tells us nothing
        return None


def _estimated_stop(
    resource: Any, start: datetime | None, supply: Any, now: datetime, supply_days: float
) -> datetime | None:
    """§10.1 'last taken' when no stop date is recorded: the latest of meta.lastUpdated (when
    later than the start), start + expectedSupplyDuration and start + ``supply_days``, capped
    at now. The start alone would be the earliest possible stop, not a conservative one."""
    if start is None:
        return None
    candidates = [_plus_days(start, supply_days)]
    updated = to_instant(resource.meta.lastUpdated) if resource.meta is not None else None
    if updated is not None and updated > start:
        candidates.append(updated)
    if supply is not None and supply.value is not None:
        candidates.append(_plus_days(start, float(supply.value) * UNIT_DAYS.get(supply.code or supply.unit or "d", 1)))
    known = [c for c in candidates if c is not None]
    # every candidate past year 9999: the supply outlasts any date, so the cap decides
    return min(max(known), max(now, start)) if known else max(now, start)


def last_taken(resource: Any, now: datetime, supply_days: float = 30.0) -> tuple[datetime | None, bool]:
    """(last taken, stop date recorded) for a stopped/completed medication record."""
    kind = resource.get_resource_type()
    recorded: list[datetime | None] = []
    if kind == "MedicationRequest":
        for dosage in resource.dosageInstruction or ():
            repeat = dosage.timing.repeat if dosage.timing else None
            if repeat is not None and repeat.boundsPeriod is not None:
                recorded.append(to_instant(repeat.boundsPeriod.end))
        dispense = resource.dispenseRequest
        if dispense is not None and dispense.validityPeriod is not None:
            recorded.append(to_instant(dispense.validityPeriod.end))
        start = to_instant(resource.authoredOn)
        supply = dispense.expectedSupplyDuration if dispense is not None else None
    elif kind == "MedicationStatement":
        period = resource.effectivePeriod
        recorded += [to_instant(period.end) if period else None, to_instant(resource.effectiveDateTime)]
        start = (to_instant(period.start) if period else None) or to_instant(resource.dateAsserted)
        supply = None
    else:  # MedicationAdministration: the administration itself is the record of taking
        period = resource.effectivePeriod
        recorded += [to_instant(period.end or period.start) if period else None, to_instant(resource.effectiveDateTime)]
        start, supply = None, None
    known = [c for c in recorded if c is not None]
    if known:
        return max(known), True
    return _estimated_stop(resource, start, supply, now, supply_days), False


def _status_and_time(
    resource: Any, drafted: bool, now: datetime, supply_days: float = 30.0
) -> tuple[bool, datetime | None, bool] | None:
    """(current, last taken, stop date recorded) per F-MED, or None when the record does not count."""
    kind = resource.get_resource_type()
    status = resource.status
    if kind == "MedicationRequest":
        if drafted or status in ("active", "on-hold"):
            return True, None, True
    elif kind == "MedicationStatement":
        if status in ("active", "intended", "on-hold"):
            return True, None, True
    elif kind == "MedicationAdministration":
        if status in ("entered-in-error", "not-done", "unknown"):
            return None
        taken, recorded = last_taken(resource, now, supply_days)
        if taken is not None and now - timedelta(hours=24) <= taken:
            return True, taken, recorded
        return False, taken, recorded
    if status in _IGNORED:
        return None
    taken, recorded = last_taken(resource, now, supply_days)
    return False, taken, recorded


def _ingredient_of_class(ingredients: Sequence[str], value_set: ValueSet) -> str | None:
    """The first of the drug's ingredients that belongs to the class, if any."""
    return next((name for name in ingredients if name in value_set.ingredient_names), None)


def _medications(record: PatientRecord, drafts: Sequence[Any], order: CryoOrder) -> Iterator[tuple[Any, bool]]:
    for kind in ("MedicationRequest", "MedicationStatement", "MedicationAdministration"):
        for resource in record.of(kind):
            yield resource, False
    for resource in drafts:
        if resource.get_resource_type() == "MedicationRequest" and ref_of(resource) != order.ref:
            yield resource, True


# Per terminology: a drug's words and codes -> (name per matched class, systemic-steroid name).
_CLASSES_KEPT = 4_096
_classified: WeakKeyDictionary[Terminology, dict[tuple[Any, ...], tuple[dict[str, str], str | None]]] = (
    WeakKeyDictionary()
)


def forget_drug_classes() -> None:
    """Drop the remembered classifications: their keys are strings of the last records'
    JSON and, after a large record, would keep its memory pools from being handed back."""
    _classified.clear()


def _concept_key(concepts: Sequence[Any]) -> tuple[Any, ...]:
    """Everything the matching reads of the concepts: each one's text and its codings' system,
    code and display."""
    return tuple(
        (
            getattr(concept, "text", None),
            tuple(
                (getattr(c, "system", None), getattr(c, "code", None), getattr(c, "display", None))
                for c in getattr(concept, "coding", None) or ()
            ),
        )
        for concept in concepts
    )


def _drug_classes(concepts: Sequence[Any], tx: Terminology) -> tuple[dict[str, str], str | None]:
    """(drug name per matched class, the name if it is a glucocorticoid), remembered per drug:
    a record names the same few drugs in every refill, and matching them against every class
    by code, ATC prefix and name was a tenth of a large record's call (benchmarks/http.py)."""
    memo = _classified.setdefault(tx, {})
    key = _concept_key(concepts)
    known = memo.get(key)
    if known is None:
        glucocorticoids = tx["MED-IMMSUP.glucocorticoid"]
        ingredients = drug_ingredients(
            concepts, [*(tx[vs_id] for vs_id in MEDICATION_CLASSES.values()), glucocorticoids]
        )
        names: dict[str, str] = {}
        for flag, vs_id in MEDICATION_CLASSES.items():
            name = drug_class_match(concepts, tx[vs_id]) or _ingredient_of_class(ingredients, tx[vs_id])
            if name:
                names[flag] = name
        steroid = drug_class_match(concepts, glucocorticoids) or _ingredient_of_class(ingredients, glucocorticoids)
        if len(memo) >= _CLASSES_KEPT:
            memo.clear()
        known = memo[key] = (names, steroid)
    return known


def medication_facts(record: PatientRecord, drafts: Sequence[Any], order: CryoOrder, ctx: FactContext) -> list[Fact]:
    tx = ctx.terminology
    facts = []
    for resource, drafted in _medications(record, drafts, order):
        state = _status_and_time(resource, drafted, ctx.now, ctx.supply_days)
        if state is None:
            continue
        concepts = _concepts(resource, record)
        if not concepts:
            continue
        known_names, steroid = _drug_classes(concepts, tx)
        flags = dict.fromkeys(known_names, True)
        names = dict(known_names)  # drug name per matched class, in class order
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
        current, taken, stop_recorded = state
        first = next(iter(codings(concepts[0])), None)
        facts.append(
            ctx.new_fact(
                "medication",
                resource,
                **flags,
                current=current,
                days_before_treatment=round(days_between(taken, ctx.treatment), 4) if taken and not current else None,
                stop_date_recorded=None if current else stop_recorded,
                label=drug or label(concepts[0]),
                date=taken.date().isoformat() if taken else None,
                system=first[0] if first else None,
                code=first[1] if first else None,
                value_text="current" if current else "stopped",
            )
        )
    return facts
