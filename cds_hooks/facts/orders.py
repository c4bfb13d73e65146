"""The order's own facts (dose, temperature, schedule, site, indication) and the facts
that relate other care to it in time and place (prior sessions, physical therapy, laser,
peels, previous courses) — catalogue §2.3 and §6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from ..concepts import codings, joined_text, label, texts
from ..fhirtime import UNIT_DAYS, days_between, to_instant
from ..orders import (
    TEMPERATURE_URL,
    CryoOrder,
    application_seconds,
    classify,
    detect,
    extension_quantity,
    to_celsius,
)
from ..record import PatientRecord, ref_of
from ..terminology import ICD10CM, Terminology, normalise_icd
from .context import Fact, FactContext, performed_time

REGION_SETS = (
    "REGION.FACE",
    "REGION.SCALP-HEAD",
    "REGION.NECK",
    "REGION.TRUNK",
    "REGION.UPPER-LIMB",
    "REGION.HAND",
    "REGION.LOWER-LIMB",
    "REGION.FOOT",
    "REGION.GENITAL-PERIANAL",
)
REGION_SETS_ALL = frozenset(REGION_SETS)


def site_regions(sites: Any, tx: Terminology) -> set[str]:
    """CL-REGION regions of bodySite codings (exact SNOMED codes; text is not parsed)."""
    found: set[str] = set()
    for site in sites or ():
        for system, code, _ in codings(site):
            found.update(REGION_SETS_ALL & tx.memberships(system, code))
    return found


def icd_region(concept: Any, tx: Terminology) -> set[str]:
    """The region of an ICD-10-CM code: the region whose prefix matches longest."""
    best, best_len = None, 0
    for system, code, _ in codings(concept):
        if system != ICD10CM:
            continue
        code = normalise_icd(code)
        for region in REGION_SETS:
            vs = tx[region]
            lengths = [len(p) for p in vs.icd_prefixes if code.startswith(p)]
            lengths += [len(r.low) for r in vs.icd_ranges if r.contains(code)]
            if lengths and max(lengths) > best_len:
                best, best_len = region, max(lengths)
    return {best} if best else set()


def occurrence_start(resource: Any) -> datetime | None:
    """Treatment date per §1 Clock: occurrence[x] start, earliest event, or bounds start."""
    if getattr(resource, "occurrenceDateTime", None) is not None:
        return to_instant(resource.occurrenceDateTime)
    period = getattr(resource, "occurrencePeriod", None)
    if period is not None and period.start is not None:
        return to_instant(period.start)
    timing = getattr(resource, "occurrenceTiming", None)
    if timing is not None:
        events = [t for t in (to_instant(e) for e in timing.event or ()) if t is not None]
        if events:
            return min(events)
        repeat = timing.repeat
        if repeat is not None and repeat.boundsPeriod is not None:
            return to_instant(repeat.boundsPeriod.start)
    return None


def schedule(resource: Any) -> dict[str, float]:
    """Sessions per week/day/course, interval and course length from occurrenceTiming."""
    out: dict[str, float] = {}
    timing = getattr(resource, "occurrenceTiming", None)
    repeat = timing.repeat if timing is not None else None
    per_day = None
    if repeat is not None and repeat.frequency and repeat.period and repeat.periodUnit in UNIT_DAYS:
        period_days = float(repeat.period) * UNIT_DAYS[repeat.periodUnit]
        per_day = repeat.frequency / period_days
        out.update(
            sessions_per_day=round(per_day, 4),
            sessions_per_week=round(per_day * 7, 4),
            interval_days=round(period_days / repeat.frequency, 4),
        )
    course_days = None
    if repeat is not None and repeat.boundsDuration is not None and repeat.boundsDuration.value is not None:
        unit = repeat.boundsDuration.code or repeat.boundsDuration.unit or "d"
        course_days = float(repeat.boundsDuration.value) * UNIT_DAYS.get(unit, 1.0)
    elif repeat is not None and repeat.boundsPeriod is not None:
        start, end = to_instant(repeat.boundsPeriod.start), to_instant(repeat.boundsPeriod.end)
        if start and end:
            course_days = days_between(start, end)
    if repeat is not None and repeat.count:
        out["sessions_per_course"] = float(repeat.count)
    elif per_day is not None and course_days is not None:
        out["sessions_per_course"] = round(per_day * course_days, 4)
    elif getattr(resource, "quantityQuantity", None) is not None and resource.quantityQuantity.value is not None:
        out["sessions_per_course"] = float(resource.quantityQuantity.value)
    if course_days is not None:
        out["course_weeks"] = round(course_days / 7, 4)
    elif "sessions_per_course" in out and "sessions_per_week" in out and out["sessions_per_week"] > 0:
        out["course_weeks"] = round(out["sessions_per_course"] / out["sessions_per_week"], 4)
    return out


@dataclass(frozen=True)
class OrderContext:
    """Where and when the order is: what site and time comparisons are made against."""

    order: CryoOrder
    treatment: datetime
    regions: frozenset[str]
    terminology: Terminology

    @classmethod
    def build(cls, order: CryoOrder, record: PatientRecord, tx: Terminology, now: datetime) -> OrderContext:
        return cls(
            order, occurrence_start(order.resource) or now, frozenset(site_regions(order.resource.bodySite, tx)), tx
        )

    def regions_of(self, resource: Any) -> set[str]:
        regions = site_regions(getattr(resource, "bodySite", None), self.terminology)
        if not regions and resource.get_resource_type() == "Condition":
            regions = icd_region(resource.code, self.terminology)
        return regions

    def site_match_for(self, resource: Any) -> str:
        other = self.regions_of(resource)
        if not self.regions or not other:
            return "unknown"
        return "same" if self.regions & other else "other"


def _reasons(order: CryoOrder, record: PatientRecord) -> list[Any]:
    resource = order.resource
    reasons = list(resource.reasonCode or ())
    for ref in resource.reasonReference or ():
        target = record.resolve(ref.reference, resource)
        if target is not None and getattr(target, "code", None) is not None:
            reasons.append(target.code)
        else:  # a reason we cannot read: like a reason without an ICD-10-CM coding, it counts
            reasons.append(None)
    return reasons


def _has_indication(reasons: list[Any], tx: Terminology) -> bool:
    """CI-COSMETIC-WBC: an ICD-10-CM reason in the indication list, or a reason with no ICD-10-CM coding."""
    for reason in reasons:
        icd = [(s, c) for s, c, _ in codings(reason) if s == ICD10CM]
        if not icd or any(tx["INDICATION.medical"].has_code(s, c) for s, c in icd):
            return True
    return False


def order_fact(order: CryoOrder, octx: OrderContext, record: PatientRecord, ctx: FactContext) -> Fact:
    tx = ctx.terminology
    resource = order.resource
    seconds = application_seconds(resource)
    temperature = to_celsius(extension_quantity(resource, TEMPERATURE_URL))
    reasons = _reasons(order, record)
    plan = schedule(resource)
    done_7d = sum(
        1
        for p in record.of("Procedure")
        if p.status == "completed"
        and ref_of(p) != order.ref
        and ctx.is_cryotherapy(p)
        and classify(p, tx, ctx.systemic) == order.modality
        and 0 < days_between(performed_time(p) or ctx.treatment, ctx.treatment) <= 7
    )
    sites = resource.bodySite
    return ctx.new_fact(
        "order",
        resource,
        modality=order.modality,
        local_code=order.local_code,
        label=label(resource.code, "cryotherapy order"),
        freeze_s=round(seconds, 3) if seconds is not None else None,
        has_duration=seconds is not None,
        temp_c=round(temperature, 3) if temperature is not None else None,
        has_temp=temperature is not None,
        week_load=round(done_7d + plan.get("sessions_per_week", 1.0), 4),
        has_indication=_has_indication(reasons, tx),
        reason_pigment_spot=any(ctx.in_set(r, "CL-PIGMENT-SPOT") for r in reasons),
        reason_acne=any(ctx.in_set(r, "INDICATION.acne") for r in reasons),
        reason_rosacea=any(ctx.in_set(r, "INDICATION.rosacea") for r in reasons),
        reason_alopecia=any(ctx.in_set(r, "INDICATION.alopecia") for r in reasons),
        **_lesion_reason(reasons, ctx),
        site_hair_bearing=any(ctx.in_set(s, "HAIR-BEARING") for s in sites or ()),
        site_beard_area=any(ctx.in_set(s, "HAIR-BEARING.male") for s in sites or ()),
        region_known=bool(octx.regions),
        site=_site_label(sites),
        date=octx.treatment.date().isoformat(),
        **plan,
    )


def _lesion_reason(reasons: list[Any], ctx: FactContext) -> dict[str, Any]:
    """CI-LESION-DX: the order is for a melanoma, or for a pigmented or uncertain lesion that
    must be diagnosed before it is destroyed (reason codes, their text, referenced Conditions)."""
    melanoma = [r for r in reasons if ctx.in_set(r, "CL-MELANOMA")]
    check = [r for r in reasons if ctx.in_set(r, "CL-LESION-CHECK", with_text=True)]
    if not melanoma and not check:
        return {}
    return {
        "reason_melanoma": bool(melanoma),
        "reason_lesion_check": bool(check),
        "lesion": label((melanoma or check)[0], "lesion"),
    }


def _site_label(sites: Any) -> str | None:
    """The ordered body sites as a clinician reads them (for {site} in card texts)."""
    names = list(dict.fromkeys(label(s, "") for s in sites or ()))
    return ", ".join(n for n in names if n) or None


def _kinds(concepts: Sequence[Any], text: str, ctx: FactContext, cryo: bool) -> dict[str, bool]:
    tx = ctx.terminology
    flags = {}
    if any(ctx.in_set(c, "PROC.physical-therapy") for c in concepts):
        flags["pt"] = True
    if any(ctx.in_set(c, "PROC.laser") for c in concepts) or tx["PROC.laser"].matches_text(text):
        flags["laser"] = True
    if not cryo and (any(ctx.in_set(c, "PROC.peel") for c in concepts) or tx["PROC.peel"].matches_text(text)):
        flags["peel"] = True  # "cryopeeling" is cryotherapy, not a chemical peel
    return flags


def _procedure_flags(ctx: FactContext, cryo: bool, code: Any) -> dict[str, bool]:
    """What kind of past procedure a code (and its text) makes of a Procedure."""
    flags = _kinds([code], joined_text(texts(code)), ctx, cryo)
    if ctx.in_set(code, "MED-CHEMO.procedure"):
        flags["chemo"] = True
    if cryo:
        flags["cryo"] = True
    return flags


def interval_facts(
    order: CryoOrder, octx: OrderContext, record: PatientRecord, drafts: Sequence[Any], ctx: FactContext
) -> list[Fact]:
    """Past procedures and planned services placed in time and site relative to the order."""
    facts: list[Fact] = []
    for proc in record.of("Procedure"):
        if proc.status not in ("completed", "in-progress") or ref_of(proc) == order.ref:
            continue
        when = performed_time(proc)
        if when is None:
            continue
        cryo = ctx.is_cryotherapy(proc)
        flags = ctx.codes.derived(("procedure flags", cryo), proc.code, partial(_procedure_flags, ctx, cryo))
        if not flags:
            continue
        before = days_between(when, ctx.treatment)
        facts.append(
            ctx.new_fact(
                "procedure",
                proc,
                **flags,
                site_match=octx.site_match_for(proc),
                days_before_treatment=round(before, 4),
                days_apart=round(abs(before), 4),
                hours_apart=round(abs(before) * 24, 4),
                label=label(proc.code),
                date=when.date().isoformat(),
            )
        )
    planned = [(sr, False) for sr in record.of("ServiceRequest") if sr.status in ("active", "on-hold", "draft")]
    planned += [(d, True) for d in drafts if d.get_resource_type() == "ServiceRequest"]
    seen = set()
    for service, _drafted in planned:
        ref = ref_of(service)
        if ref == order.ref or ref in seen:
            continue
        seen.add(ref)
        facts += _planned_fact(service, [service.code], occurrence_start(service), octx, ctx)
    for appt in record.of("Appointment"):
        if appt.status in ("cancelled", "noshow", "entered-in-error", "fulfilled"):
            continue
        concepts = list(appt.serviceType or ()) + list(appt.reasonCode or ())
        concepts += [appt.appointmentType] if appt.appointmentType else []
        facts += _planned_fact(appt, concepts, to_instant(appt.start), octx, ctx, extra_text=appt.description)
    facts += _prior_course(order, record, ctx)
    return facts


def _planned_fact(
    resource: Any,
    concepts: list[Any],
    when: datetime | None,
    octx: OrderContext,
    ctx: FactContext,
    extra_text: str | None = None,
) -> list[Fact]:
    if when is None:
        return []
    tx = ctx.terminology
    cryo = resource.get_resource_type() == "ServiceRequest" and detect(resource, tx) is not None
    text = joined_text([t for c in concepts for t in texts(c)] + [extra_text])
    flags = _kinds(concepts, text, ctx, cryo)
    if cryo:
        flags["cryo"] = True
    if not flags:
        return []
    after = days_between(ctx.treatment, when)
    return [
        ctx.new_fact(
            "planned",
            resource,
            **flags,
            site_match=octx.site_match_for(resource),
            days_after_treatment=round(after, 4),
            days_apart=round(abs(after), 4),
            hours_apart=round(abs(after) * 24, 4),
            label=label(concepts[0] if concepts else None, text or "planned"),
            date=when.date().isoformat(),
        )
    ]


def _prior_course(order: CryoOrder, record: PatientRecord, ctx: FactContext) -> list[Fact]:
    """TD-FREQ-INCREASE: the most recent other cryotherapy request of the same modality."""
    tx = ctx.terminology
    candidates = []
    for sr in record.of("ServiceRequest"):
        if ref_of(sr) == order.ref or sr.status not in ("active", "on-hold", "completed"):
            continue
        authored = to_instant(sr.authoredOn)
        if authored is None or detect(sr, tx) is None or classify(sr, tx, ctx.systemic) != order.modality:
            continue
        candidates.append((authored, sr))
    if not candidates:
        return []
    authored, latest = max(candidates, key=lambda c: c[0])
    new_rate = schedule(order.resource).get("sessions_per_week")
    old_rate = schedule(latest).get("sessions_per_week")
    if new_rate is None or old_rate is None:
        return []
    return [
        ctx.new_fact(
            "prior_course",
            latest,
            most_recent=True,
            authored_days_ago=ctx.days_ago(authored),
            freq_delta=round(new_rate - old_rate, 4),
            label=label(latest.code),
            date=authored.date().isoformat(),
            value_text=f"{old_rate:g}/week -> {new_rate:g}/week",
        )
    ]
