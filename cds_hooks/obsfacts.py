"""Observation facts: latest lab values in normalised units, the CMS165 blood-pressure day,
pre-treatment exams and pregnancy evidence (with its supersession by later negatives).

F-OBS: status final/amended/corrected/preliminary; date = effective[x] (Period: start),
else issued; "latest" = the counting observation with the greatest date.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from .concepts import codings, in_set, label, texts
from .fhirtime import to_instant, written_date
from .orderfacts import performed_time
from .record import PatientRecord
from .terminology import Terminology

if TYPE_CHECKING:
    from .facts import Fact, FactContext

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


def _unit(quantity: Any) -> str:
    return str(quantity.code or quantity.unit or "").strip()


HB_FACTORS = {"g/dl": 1.0, "g/l": 0.1, "mg/dl": 0.001, "mmol/l": 1.611}


def hb_g_dl(quantity: Any, molar: bool) -> float | None:
    """Haemoglobin in g/dL. The unit decides (g/dL, g/L, mg/dL, mmol/L × 1.611): labs send
    mass codes with molar units and vice versa; the LOINC property is used only without a unit."""
    value, unit = float(quantity.value), _unit(quantity).lower()
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
    value, unit = float(quantity.value), _unit(quantity).replace("µ", "u")
    if unit in ("10*3/uL", "10^3/uL", "K/uL", "10*9/L", "10^9/L", "x10E3/uL", ""):
        return value
    if unit in ("/uL", "1/uL", "cells/uL", "{cells}/uL", "/mm3"):
        return value / 1000
    return None


def _value(obs: Any, code_check: Any) -> Iterator[tuple[str, float]]:
    """(code, value) of the observation itself and each of its components."""
    if obs.valueQuantity is not None and obs.valueQuantity.value is not None:
        for _s, code, _d in codings(obs.code):
            yield code, obs.valueQuantity
    for component in obs.component or ():
        if component.valueQuantity is not None and component.valueQuantity.value is not None:
            for _s, code, _d in codings(component.code):
                yield code, component.valueQuantity


LAB_UNITS = {"hb": "g/dL", "a1c": "%", "anc": "x10^3/uL", "hr": "/min"}  # the normalised units, for display
LAB_NAMES = {"hb": "Haemoglobin", "a1c": "HbA1c", "anc": "Absolute neutrophil count", "hr": "Heart rate",
             "ice": "Ice test"}  # labels for observations sent with a bare code (no text or display)
LABS = {  # test -> (value sets, converter)
    "hb": (("OBS-HB.mass", "OBS-HB.molar"), None),
    "a1c": (("OBS-A1C",), a1c_percent),
    "anc": (("CL-IMMUNO.anc-obs",), anc_thousands),
    "hr": (("OBS-BP.hr",), lambda q: float(q.value)),
}


def _lab_value(test: str, obs: Any, tx: Terminology) -> float | None:
    sets, convert = LABS[test]
    if obs.valueQuantity is None or obs.valueQuantity.value is None:
        return None
    if not any(in_set(obs.code, tx[s]) for s in sets):
        return None
    if test == "hb":
        return hb_g_dl(obs.valueQuantity, molar=in_set(obs.code, tx["OBS-HB.molar"]))
    return convert(obs.valueQuantity) if convert else None


def _is_positive(obs: Any, tx: Terminology) -> bool | None:
    interpretations = {code for _s, code, _d in codings(obs.interpretation)}
    if interpretations & POSITIVE_INTERPRETATIONS or in_set(obs.valueCodeableConcept, tx["CL-PREG.hcg-positive"]):
        return True
    if interpretations & NEGATIVE_INTERPRETATIONS or in_set(obs.valueCodeableConcept, tx["CL-PREG.hcg-negative"]):
        return False
    return None


def lab_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    tx = ctx.terminology
    latest: dict[str, tuple[datetime, Any, Any]] = {}
    for obs, when, _raw in counting(record, ctx.now):
        for test in LABS:
            value = _lab_value(test, obs, tx)
            if value is not None and (test not in latest or when > latest[test][0]):
                latest[test] = (when, obs, round(value, 3))
        if in_set(obs.code, tx["OBS-PREEXAM.ice-test"]) and ("ice" not in latest or when > latest["ice"][0]):
            latest["ice"] = (when, obs, _is_positive(obs, tx))
    facts = []
    for test, (when, obs, value) in latest.items():
        fields: dict[str, Any] = {"positive": bool(value)} if test == "ice" else {"value": value}
        hit = next(iter(codings(obs.code)), None)
        facts.append(ctx.new_fact(
            "lab", obs, test=test, days_ago=ctx.days_ago(when), date=when.date().isoformat(),
            label=label(obs.code, LAB_NAMES[test]) if texts(obs.code) else LAB_NAMES[test],
            system=hit[0] if hit else None, code=hit[1] if hit else None,
            value_text=f"{value:g} {LAB_UNITS[test]}" if test in LAB_UNITS else str(value), **fields))
    return facts


def bp_fact(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    """CMS165: the latest day with a reading; the lowest systolic and lowest diastolic of it."""
    tx = ctx.terminology
    sbp_set, dbp_set = tx["OBS-BP.sbp"], tx["OBS-BP.dbp"]
    days: dict[date, dict[str, Any]] = {}
    for obs, when, raw in counting(record, ctx.now):
        for code, quantity in _value(obs, None):
            kind = "sbp" if sbp_set.has_code("http://loinc.org", code) else (
                "dbp" if dbp_set.has_code("http://loinc.org", code) else None)
            if kind is None:
                continue
            day = written_date(raw)
            if day is None:
                continue
            slot = days.setdefault(day, {"refs": [], "when": when})
            value = float(quantity.value)
            slot[kind] = min(value, slot.get(kind, value))
            slot["when"] = max(slot["when"], when)
            slot["refs"].append(obs)
    if not days:
        return []
    day = max(days)
    slot = days[day]
    when = slot["when"]  # the day's latest reading: windows are elapsed time from readings (§1 Clock)
    first = slot["refs"][0]
    hit = next(iter(codings(first.code)), None)  # the evidence names the reading's own code (55284-4, 8480-6...)
    return [ctx.new_fact(
        "bp", first, sbp=slot.get("sbp"), dbp=slot.get("dbp"), days_ago=ctx.days_ago(when),
        date=day.isoformat(), label="blood pressure", system=hit[0] if hit else None, code=hit[1] if hit else None,
        value_text=f"{slot.get('sbp', '?'):g}/{slot.get('dbp', '?'):g} mmHg"
        if "sbp" in slot and "dbp" in slot else None)]


EXAMS = {"ecg": ("OBS-PREEXAM.ecg-obs", "OBS-PREEXAM.ecg-proc"), "cbc": ("OBS-PREEXAM.cbc",),
         "urine": ("OBS-PREEXAM.urine",), "ice": ("OBS-PREEXAM.ice-test",)}


def exam_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    """The latest ECG, blood test, urine test and ice test (Observation or Procedure)."""
    tx = ctx.terminology
    latest: dict[str, tuple[datetime, Any]] = {}

    def offer(test: str, when: datetime, resource: Any) -> None:
        if test not in latest or when > latest[test][0]:
            latest[test] = (when, resource)

    for obs, when, _raw in counting(record, ctx.now):
        for test, sets in EXAMS.items():
            if any(in_set(obs.code, tx[s]) for s in sets):
                offer(test, when, obs)
    for proc in record.of("Procedure"):
        if proc.status not in ("completed", "in-progress"):
            continue
        when = performed_time(proc)
        if when is not None and in_set(proc.code, tx["OBS-PREEXAM.ecg-proc"]):
            offer("ecg", when, proc)
    return [ctx.new_fact("exam", resource, test=test, days_ago=ctx.days_ago(when),
                         date=when.date().isoformat(), label=label(getattr(resource, "code", None)))
            for test, (when, resource) in latest.items()]


def pregnancy_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    """Every piece of pregnancy evidence with its polarity; pregnant/possible evidence is
    'superseded' when a not-pregnant answer or negative hCG is dated later."""
    from .facts import condition_counts, condition_date, verified

    tx = ctx.terminology
    evidence: list[tuple[str, datetime, Any, str]] = []
    for condition in record.of("Condition"):
        if in_set(condition.code, tx["CL-PREG.condition"]) and not in_set(condition.code, tx["CL-PREG.exclude"]):
            when = condition_date(condition)
            if when is not None and verified(condition):
                polarity = "pregnant" if condition_counts(condition, ctx.now) else "documented"
                evidence.append((polarity, when, condition, label(condition.code)))
    for obs, when, _raw in counting(record, ctx.now):
        answer = obs.valueCodeableConcept
        if in_set(obs.code, tx["CL-PREG.status-obs"]):
            for polarity, vs in (("pregnant", "CL-PREG.pregnant-answers"), ("not-pregnant", "CL-PREG.not-pregnant-answers"),
                                 ("possible", "CL-PREG.uncertain-answers"), ("unknown", "CL-PREG.unknown-answers")):
                if in_set(answer, tx[vs]):
                    evidence.append((polarity, when, obs, f"Pregnancy status: {label(answer)}"))
                    break
        elif in_set(obs.code, tx["CL-PREG.hcg-tests"]):
            positive = _is_positive(obs, tx)
            polarity = {True: "pregnant", False: "not-pregnant", None: "documented"}[positive]
            evidence.append((polarity, when, obs, f"hCG {label(obs.code)}: {polarity}"))
    negatives = [when for polarity, when, _r, _l in evidence if polarity == "not-pregnant"]
    facts = []
    for polarity, when, resource, text in evidence:
        superseded = polarity in ("pregnant", "possible") and any(n > when for n in negatives)
        facts.append(ctx.new_fact(
            "pregnancy", resource, polarity=polarity, superseded=superseded, days_ago=ctx.days_ago(when),
            informative=polarity != "unknown", date=when.date().isoformat(), label=text))
    return facts


def observation_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    return lab_facts(record, ctx) + bp_fact(record, ctx) + exam_facts(record, ctx) + pregnancy_facts(record, ctx)
