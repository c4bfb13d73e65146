"""Observation facts: latest lab values in normalised units, the CMS165 blood-pressure day,
pre-treatment exams and pregnancy evidence (with its supersession by later negatives).

F-OBS: status final/amended/corrected/preliminary; date = effective[x] (Period: start),
else issued; "latest" = the counting observation with the greatest date. Catalogue §10.1:
an analyte counts wherever it is written: as an Observation's code, as a ``component`` of any
panel, or as a ``hasMember`` Observation of a panel (contained or in the record), which takes
the panel's date when it has none of its own. The value-set ids come from ``prefetch``, so
what is read here is what the prefetch asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ..concepts import codings, label, texts
from ..fhirtime import to_instant, written_date
from ..prefetch import A1C_SETS, ANC_SETS, BP_SETS, EXAM_SETS, HB_SETS, HR_SETS, PREGNANCY_SETS
from ..record import PatientRecord
from .conditions import condition_counts, condition_date, verified
from .context import Fact, FactContext, performed_time

COUNTING_STATUS = {"final", "amended", "corrected", "preliminary"}
POSITIVE_INTERPRETATIONS = {"POS", "A", "AA", "DET"}
NEGATIVE_INTERPRETATIONS = {"NEG", "N", "ND"}


def observation_time(obs: Any) -> tuple[datetime | None, Any]:
    """(instant, raw value as written) of an observation per F-OBS."""
    raw = obs.effectiveDateTime or obs.effectiveInstant
    if raw is None and obs.effectivePeriod is not None:
        raw = obs.effectivePeriod.start or obs.effectivePeriod.end
    if raw is None:
        raw = obs.issued
    return to_instant(raw), raw


def counting(record: PatientRecord, now: datetime) -> Iterator[tuple[Any, datetime, Any]]:
    """Observations that count, with their date; future-dated ones are ignored."""
    for obs in record.of("Observation"):
        if obs.status not in COUNTING_STATUS:
            continue
        when, raw = observation_time(obs)
        if when is None or (when - now).total_seconds() > 86400:
            continue
        yield obs, when, raw


@dataclass(frozen=True)
class Analyte:
    """One result wherever it was written: ``element`` is the Observation or component that
    holds the code and value; ``owner`` the Observation the evidence names."""

    code: Any
    element: Any
    owner: Any
    when: datetime
    raw_when: Any

    @property
    def quantity(self) -> Any | None:
        quantity = getattr(self.element, "valueQuantity", None)
        return quantity if quantity is not None and quantity.value is not None else None


def _members(panel: Any, record: PatientRecord) -> Iterator[Any]:
    for reference in panel.hasMember or ():
        member = record.resolve(reference.reference, panel, "Observation")
        if member is not None and member is not panel:
            yield member


def analytes(record: PatientRecord, now: datetime) -> Iterator[Analyte]:
    """Every counting result: each Observation's own code, its components, and the members of
    panels that carry no date of their own (a dated member counts as the Observation it is)."""
    for obs, when, raw in counting(record, now):
        yield Analyte(obs.code, obs, obs, when, raw)
        for component in obs.component or ():
            yield Analyte(component.code, component, obs, when, raw)
        for member in _members(obs, record):
            if observation_time(member)[0] is not None or (member.status not in COUNTING_STATUS | {None}):
                continue
            yield Analyte(member.code, member, member, when, raw)
            for component in member.component or ():
                yield Analyte(component.code, component, member, when, raw)


def _unit(quantity: Any) -> str:
    return str(quantity.code or quantity.unit or "").strip()


HB_FACTORS = {"g/dl": 1.0, "g/100ml": 1.0, "gm/dl": 1.0, "g/l": 0.1, "mg/dl": 0.001, "mmol/l": 1.611}


def hb_g_dl(quantity: Any, molar: bool) -> float | None:
    """Haemoglobin in g/dL. The unit decides (g/dL, g/L, mg/dL, mmol/L × 1.611): labs send
    mass codes with molar units and vice versa; the LOINC property is used only without a unit."""
    value, unit = float(quantity.value), _unit(quantity).lower().replace(" ", "")
    if unit in HB_FACTORS:
        return value * HB_FACTORS[unit]
    if not unit:
        return value * 1.611 if molar else value
    return None


def a1c_percent(quantity: Any) -> float | None:
    """HbA1c in % (NGSP) from % or mmol/mol (IFCC master equation, rounded to 0.1 % as labs
    report it, so 75 mmol/mol = 9.0 % and the catalogue's "> 75 mmol/mol" equals "> 9.0 %")."""
    value, unit = float(quantity.value), _unit(quantity).lower()
    if unit == "mmol/mol":
        return round(0.09148 * value + 2.152, 1)
    return value if unit.startswith("%") or unit in ("", "percent") else None


def anc_thousands(quantity: Any) -> float | None:
    """Absolute neutrophil count in 10^3/µL."""
    value, unit = float(quantity.value), _unit(quantity).replace("µ", "u").replace("μ", "u")
    if unit in ("10*3/uL", "10^3/uL", "K/uL", "10*9/L", "10^9/L", "x10E3/uL", "x10^9/L", "G/L", ""):
        return value
    if unit in ("/uL", "1/uL", "cells/uL", "{cells}/uL", "/mm3", "10*6/L"):
        return value / 1000
    return None


_PER_MINUTE = {
    "/min": 1.0,
    "1/min": 1.0,
    "{beats}/min": 1.0,
    "beats/min": 1.0,
    "{beat}/min": 1.0,
    "bpm": 1.0,
    "": 1.0,
    "/s": 60.0,
    "1/s": 60.0,
    "{beats}/s": 60.0,
    "hz": 60.0,
    "/h": 1 / 60,
    "{beats}/h": 1 / 60,
}


def per_minute(quantity: Any) -> float | None:
    """Heart rate in beats per minute (per-second and per-hour rates converted)."""
    factor = _PER_MINUTE.get(_unit(quantity).lower().replace(" ", ""))
    return float(quantity.value) * factor if factor is not None else None


_MM_HG = {"mm[hg]": 1.0, "mmhg": 1.0, "mm hg": 1.0, "": 1.0, "kpa": 7.50062}


def mm_hg(quantity: Any) -> float | None:
    """Blood pressure in mmHg (kPa × 7.50062)."""
    factor = _MM_HG.get(_unit(quantity).lower())
    return float(quantity.value) * factor if factor is not None else None


LAB_UNITS = {"hb": "g/dL", "a1c": "%", "anc": "x10^3/uL", "hr": "/min"}  # the normalised units, for display
LAB_NAMES = {
    "hb": "Haemoglobin",
    "a1c": "HbA1c",
    "anc": "Absolute neutrophil count",
    "hr": "Heart rate",
    "ice": "Ice test",
}  # labels for observations sent with a bare code (no text or display)
LABS = {  # test -> (value sets, converter)
    "hb": (HB_SETS, None),
    "a1c": (A1C_SETS, a1c_percent),
    "anc": (ANC_SETS, anc_thousands),
    "hr": (HR_SETS, per_minute),
}


def _lab_value(test: str, found: Analyte, ctx: FactContext) -> float | None:
    sets, convert = LABS[test]
    if ctx.codes.sets_of(found.code).isdisjoint(sets):
        return None
    quantity = found.quantity
    if quantity is None:
        return None
    if test == "hb":
        return hb_g_dl(quantity, molar=ctx.in_set(found.code, "OBS-HB.molar"))
    return convert(quantity) if convert else None


def _is_positive(element: Any, ctx: FactContext) -> bool | None:
    interpretations = {code for _s, code, _d in codings(getattr(element, "interpretation", None))}
    answer = getattr(element, "valueCodeableConcept", None)
    if interpretations & POSITIVE_INTERPRETATIONS or ctx.in_set(answer, "CL-PREG.hcg-positive"):
        return True
    if interpretations & NEGATIVE_INTERPRETATIONS or ctx.in_set(answer, "CL-PREG.hcg-negative"):
        return False
    return None


def lab_facts(record: PatientRecord, ctx: FactContext, found_all: list[Analyte] | None = None) -> list[Fact]:
    latest: dict[str, tuple[datetime, Analyte, Any]] = {}
    for found in found_all if found_all is not None else analytes(record, ctx.now):
        for test in LABS:
            value = _lab_value(test, found, ctx)
            if value is not None and (test not in latest or found.when > latest[test][0]):
                latest[test] = (found.when, found, round(value, 3))
        if ctx.in_set(found.code, "OBS-PREEXAM.ice-test") and ("ice" not in latest or found.when > latest["ice"][0]):
            latest["ice"] = (found.when, found, _is_positive(found.element, ctx))
    facts = []
    for test, (when, found, value) in latest.items():
        fields: dict[str, Any] = {"positive": bool(value)} if test == "ice" else {"value": value}
        hit = next(iter(codings(found.code)), None)
        facts.append(
            ctx.new_fact(
                "lab",
                found.owner,
                test=test,
                days_ago=ctx.days_ago(when),
                date=when.date().isoformat(),
                label=label(found.code, LAB_NAMES[test]) if texts(found.code) else LAB_NAMES[test],
                system=hit[0] if hit else None,
                code=hit[1] if hit else None,
                value_text=f"{value:g} {LAB_UNITS[test]}" if test in LAB_UNITS else str(value),
                **fields,
            )
        )
    return facts


def bp_fact(record: PatientRecord, ctx: FactContext, found_all: list[Analyte] | None = None) -> list[Fact]:
    """CMS165: the latest day with a reading; the lowest systolic and lowest diastolic of it."""
    sbp_set, dbp_set = BP_SETS
    days: dict[date, dict[str, Any]] = {}
    for found in found_all if found_all is not None else analytes(record, ctx.now):
        kind = "sbp" if ctx.in_set(found.code, sbp_set) else ("dbp" if ctx.in_set(found.code, dbp_set) else None)
        quantity = found.quantity
        if kind is None or quantity is None:
            continue
        value = mm_hg(quantity)
        day = written_date(found.raw_when)
        if value is None or day is None:
            continue
        slot = days.setdefault(day, {"refs": [], "when": found.when})
        slot[kind] = min(value, slot.get(kind, value))
        slot["when"] = max(slot["when"], found.when)
        slot["refs"].append(found.owner)
    if not days:
        return []
    day = max(days)
    slot = days[day]
    when = slot["when"]  # the day's latest reading: windows are elapsed time from readings (§1 Clock)
    first = slot["refs"][0]
    hit = next(iter(codings(first.code)), None)  # the evidence names the reading's own code (55284-4, 8480-6...)
    return [
        ctx.new_fact(
            "bp",
            first,
            sbp=_rounded(slot.get("sbp")),
            dbp=_rounded(slot.get("dbp")),
            days_ago=ctx.days_ago(when),
            date=day.isoformat(),
            label="blood pressure",
            system=hit[0] if hit else None,
            code=hit[1] if hit else None,
            value_text=f"{_rounded(slot['sbp']):g}/{_rounded(slot['dbp']):g} mmHg"
            if "sbp" in slot and "dbp" in slot
            else None,
        )
    ]


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


EXAM_OF = dict(zip(EXAM_SETS, ("ecg", "ecg", "cbc", "urine", "ice"), strict=True))  # value set -> exam


def exam_facts(record: PatientRecord, ctx: FactContext, found_all: list[Analyte] | None = None) -> list[Fact]:
    """The latest ECG, blood test, urine test and ice test (Observation or Procedure)."""
    latest: dict[str, tuple[datetime, Any]] = {}

    def offer(test: str, when: datetime, resource: Any) -> None:
        if test not in latest or when > latest[test][0]:
            latest[test] = (when, resource)

    for found in found_all if found_all is not None else analytes(record, ctx.now):
        for vs_id in EXAM_SETS:
            if ctx.in_set(found.code, vs_id):
                offer(EXAM_OF[vs_id], found.when, found.owner)
    for proc in record.of("Procedure"):
        if proc.status not in ("completed", "in-progress"):
            continue
        when = performed_time(proc)
        if when is not None and ctx.in_set(proc.code, "OBS-PREEXAM.ecg-proc"):
            offer("ecg", when, proc)
    return [
        ctx.new_fact(
            "exam",
            resource,
            test=test,
            days_ago=ctx.days_ago(when),
            date=when.date().isoformat(),
            label=label(getattr(resource, "code", None)),
        )
        for test, (when, resource) in latest.items()
    ]


def pregnancy_facts(record: PatientRecord, ctx: FactContext, found_all: list[Analyte] | None = None) -> list[Fact]:
    """Every piece of pregnancy evidence with its polarity; pregnant/possible evidence is
    'superseded' when a not-pregnant answer or negative hCG is dated later."""
    status_set, hcg_set = PREGNANCY_SETS
    evidence: list[tuple[str, datetime, Any, str]] = []
    for condition in record.of("Condition"):
        if ctx.in_set(condition.code, "CL-PREG.condition") and not ctx.in_set(condition.code, "CL-PREG.exclude"):
            when = condition_date(condition)
            if when is not None and verified(condition):
                polarity = "pregnant" if condition_counts(condition, ctx.now) else "documented"
                evidence.append((polarity, when, condition, label(condition.code)))
    for found in found_all if found_all is not None else analytes(record, ctx.now):
        answer = getattr(found.element, "valueCodeableConcept", None)
        if ctx.in_set(found.code, status_set):
            for polarity, vs in (
                ("pregnant", "CL-PREG.pregnant-answers"),
                ("not-pregnant", "CL-PREG.not-pregnant-answers"),
                ("possible", "CL-PREG.uncertain-answers"),
                ("unknown", "CL-PREG.unknown-answers"),
            ):
                if ctx.in_set(answer, vs):
                    evidence.append((polarity, found.when, found.owner, f"Pregnancy status: {label(answer)}"))
                    break
        elif ctx.in_set(found.code, hcg_set):
            positive = _is_positive(found.element, ctx)
            polarity = {True: "pregnant", False: "not-pregnant", None: "documented"}[positive]
            evidence.append((polarity, found.when, found.owner, f"hCG {label(found.code)}: {polarity}"))
    negatives = [when for polarity, when, _r, _l in evidence if polarity == "not-pregnant"]
    facts = []
    for polarity, when, resource, text in evidence:
        superseded = polarity in ("pregnant", "possible") and any(n > when for n in negatives)
        facts.append(
            ctx.new_fact(
                "pregnancy",
                resource,
                polarity=polarity,
                superseded=superseded,
                days_ago=ctx.days_ago(when),
                informative=polarity != "unknown",
                date=when.date().isoformat(),
                label=text,
            )
        )
    return facts


# Every value set an analyte's own code is tested against: an analyte in none of them (most of
# a real record: weight, BMI, smoking status...) is set aside once instead of by every family.
READ_SETS = frozenset(HB_SETS + A1C_SETS + ANC_SETS + HR_SETS + BP_SETS + EXAM_SETS + PREGNANCY_SETS)


def observation_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    found = [  # walked once, read by every family
        a for a in analytes(record, ctx.now) if not ctx.codes.sets_of(a.code).isdisjoint(READ_SETS)
    ]
    return (
        lab_facts(record, ctx, found)
        + bp_fact(record, ctx, found)
        + exam_facts(record, ctx, found)
        + pregnancy_facts(record, ctx, found)
    )
