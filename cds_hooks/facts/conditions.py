"""Problem-list, implant and allergy facts: F-COND, F-DEV and F-ALG of the catalogue.

Resources that do not count (refuted, resolved, inactive) never become facts; each counting
one carries a flag per condition list it belongs to, so rules compare booleans.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from ..concepts import codings, label, status_code, texts
from ..fhirtime import to_instant
from ..record import PatientRecord, ref_of
from ..terminology import Terminology
from .context import Fact, FactContext
from .orders import OrderContext

# Condition flag -> (value set id, also match the set's text pattern)
CONDITION_SETS: dict[str, tuple[str, bool]] = {
    "in_cv": ("CL-CV", False),
    "in_htn": ("CL-HTN", False),
    "in_htn_crisis": ("CL-HTN-CRISIS", False),
    "in_arr": ("CL-ARR", False),
    "in_cardiac_device": ("CL-CARDIAC-DEVICE.condition", False),
    "in_electronic_implant": ("CL-ELECTRONIC-IMPLANT.condition", False),
    "in_metal_implant": ("CL-METAL-IMPLANT.condition", False),
    "in_anemia": ("CL-ANEMIA", False),
    "in_immuno": ("CL-IMMUNO.condition", False),
    "in_dm_unctrl": ("CL-DM-UNCTRL", False),
    "in_dm_neuro": ("CL-DM-NEURO", False),
    "in_sensory_loss": ("CL-SENSORY-LOSS", False),
    "in_pvd": ("CL-PVD", False),
    "in_cold_intolerance": ("CL-COLD-INTOL", False),
    "in_cryoglob": ("CL-CRYOGLOB", True),
    "in_raynaud": ("CL-RAYNAUD", True),
    "in_cold_aggl": ("CL-COLD-AGGL", True),
    "in_wound": ("CL-WOUND-INF", False),
    "in_resp": ("CL-RESP", False),
    "in_seizure": ("CL-EXT-WBC.seizure", False),
    "in_vte": ("CL-EXT-WBC.vte", False),
    "in_claustrophobia": ("CL-EXT-WBC.claustrophobia", False),
    "in_hypothyroid": ("CL-EXT-WBC.hypothyroid", False),
    "in_gi_bleed": ("CL-GI-BLEED", False),
    "in_rosacea": ("CL-ROSACEA", False),
    "in_ctd": ("CL-CTD", False),
    "in_lesion_check": ("CL-LESION-CHECK", True),
    "in_melanoma": ("CL-MELANOMA", False),
    "in_anticoag_use": ("MED-ANTICOAG.current-use-icd", False),
    "in_antiplt_use": ("MED-ANTIPLT.current-use-icd", False),
    "in_nsaid_use": ("MED-NSAID.current-use-icd", False),
    "in_chemo": ("MED-CHEMO.icd", False),
    "in_immsup_use": ("MED-IMMSUP.icd", False),
}
# Acute parts of a condition list (catalogue §10.3): a code in them sets the ``*_acute`` flag instead
# of the list's own flag, and the rules add the onset window (onset_days_ago), because an acute
# infection or wound that was never marked resolved must not fire for ever.
ACUTE_SETS: dict[str, tuple[str, str]] = {
    "in_wound": ("CL-WOUND-INF.acute", "in_wound_acute"),
    "in_resp": ("CL-RESP.acute", "in_resp_acute"),
}
DM_SETS = frozenset({"CL-DM", "CL-DM-UNCTRL", "CL-DM-NEURO"})  # any of them: in_dm_any
LESION_FLAGS = ("in_lesion_check", "in_melanoma")
COUNTING_CLINICAL = {"active", "recurrence", "relapse"}
# CL-REGION value set -> the words a card uses for it (CI-SITE-WOUND detail "{condition} at {region}").
REGION_NAMES = {
    "REGION.FACE": "face",
    "REGION.SCALP-HEAD": "scalp/head",
    "REGION.NECK": "neck",
    "REGION.TRUNK": "trunk",
    "REGION.UPPER-LIMB": "upper limb",
    "REGION.HAND": "hand",
    "REGION.LOWER-LIMB": "lower limb",
    "REGION.FOOT": "foot",
    "REGION.GENITAL-PERIANAL": "genital/perianal area",
}
NOT_VERIFIED = {"refuted", "entered-in-error"}


def verified(resource: Any) -> bool:
    return status_code(getattr(resource, "verificationStatus", None)) not in NOT_VERIFIED


def condition_counts(condition: Any, now: datetime) -> bool:
    """F-COND: active-like clinical status (absent = active), not refuted, not abated."""
    clinical = status_code(condition.clinicalStatus) or "active"
    if clinical not in COUNTING_CLINICAL or not verified(condition):
        return False
    if condition.abatementDateTime is not None:
        ended = to_instant(condition.abatementDateTime)
        return ended is None or ended > now
    if condition.abatementPeriod is not None:
        ended = to_instant(condition.abatementPeriod.end or condition.abatementPeriod.start)
        return ended is None or ended > now
    return not (condition.abatementAge or condition.abatementRange or condition.abatementString)


def condition_date(condition: Any) -> datetime | None:
    """onset[x] (Period: start), else recordedDate."""
    onset = condition.onsetDateTime or (condition.onsetPeriod.start if condition.onsetPeriod else None)
    return to_instant(onset) or to_instant(condition.recordedDate)


def condition_facts(record: PatientRecord, ctx: FactContext, octx: OrderContext) -> list[Fact]:
    facts = []
    for condition in record.of("Condition"):
        if not condition_counts(condition, ctx.now):
            continue
        code = condition.code
        flags = ctx.codes.derived("condition flags", code, partial(_condition_flags, ctx))
        if not flags:
            continue
        when = condition_date(condition)
        hit = next(iter(codings(code)), None)
        regions = sorted(REGION_NAMES.get(r, r) for r in octx.regions_of(condition))
        facts.append(
            ctx.new_fact(
                "condition",
                condition,
                **flags,
                label=label(code),
                onset_days_ago=ctx.days_ago(when) if when else None,
                date=when.date().isoformat() if when else None,
                system=hit[0] if hit else None,
                code=hit[1] if hit else None,
                site_match=octx.site_match_for(condition),
                region=" / ".join(regions) or "unrecorded site",
                clinical_status=status_code(condition.clinicalStatus) or "active",
                lesion=label(code) if any(f in flags for f in LESION_FLAGS) else None,
            )
        )
    return facts


def _condition_flags(ctx: FactContext, code: Any) -> dict[str, bool]:
    """The condition lists a problem's code (or its text, for some lists) puts it on."""
    tx = ctx.terminology
    member = ctx.codes.sets_of(code)  # every value set of the code, looked up once
    flags = {
        flag: True
        for flag, (vs, with_text) in CONDITION_SETS.items()
        if vs in member or (with_text and ctx.in_set(code, vs, with_text=True))
    }
    _split_acute(code, flags, tx)
    if not member.isdisjoint(DM_SETS):
        flags["in_dm_any"] = True
    text = " | ".join(texts(code))
    if tx["CL-COLD-URT"].matches_text(text):
        flags["in_cold_urticaria_text"] = True
    elif "CL-COLD-URT" in member:
        flags["in_cold_urticaria_icd"] = True
    if "CL-PREG.condition" in member and "CL-PREG.exclude" not in member:
        flags["in_pregnancy"] = True
    return flags


def _split_acute(code: Any, flags: dict[str, bool], tx: Terminology) -> None:
    """Move a list's flag to its ``*_acute`` flag when every matching coding is an acute one."""
    for flag, (acute_id, acute_flag) in ACUTE_SETS.items():
        if flag not in flags:
            continue
        full, acute = tx[CONDITION_SETS[flag][0]], tx[acute_id]
        hits = [(s, c) for s, c, _ in codings(code) if full.has_code(s, c)]
        if any(acute.has_code(s, c) for s, c in hits):
            flags[acute_flag] = True
            if all(acute.has_code(s, c) for s, c in hits):
                del flags[flag]


def _device_status_counts(device: Any) -> bool:
    return (device.status or "active") in ("active", "unknown")


DEVICE_SETS = {
    "cardiac_device": "CL-CARDIAC-DEVICE.device",
    "electronic_implant": "CL-ELECTRONIC-IMPLANT.device",
    "metal_implant": "CL-METAL-IMPLANT.device",
}


def device_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    """F-DEV: Device status active/unknown, or an active DeviceUseStatement's device."""
    devices = [(d, d) for d in record.of("Device") if _device_status_counts(d)]
    for statement in record.of("DeviceUseStatement"):
        if statement.status == "active":
            target = record.resolve(statement.device.reference if statement.device else None, statement, "Device")
            if target is not None:
                devices.append((statement, target))
    facts, seen = [], set()
    for evidence, device in devices:
        flags = {flag: True for flag, vs in DEVICE_SETS.items() if ctx.in_set(device.type, vs)}
        if not flags or ref_of(device) in seen:
            continue
        seen.add(ref_of(device))
        hit = ctx.codes.first_code(device.type, next(DEVICE_SETS[f] for f in flags))
        facts.append(
            ctx.new_fact(
                "device",
                evidence,
                **flags,
                label=label(device.type, "device"),
                system=hit[0] if hit else None,
                code=hit[1] if hit else None,
            )
        )
    return facts


def allergy_facts(record: PatientRecord, ctx: FactContext) -> list[Fact]:
    """F-ALG: active, not refuted; only cold-related allergies (and Raynaud's recorded as an
    allergy) matter to the rules."""
    tx = ctx.terminology
    facts = []
    for allergy in record.of("AllergyIntolerance"):
        if (status_code(allergy.clinicalStatus) or "active") != "active" or not verified(allergy):
            continue
        words = texts(allergy.code)  # each tested on its own: the cold pattern is anchored
        flags = {}
        if any(tx["CL-COLD-INTOL.allergy-text"].matches_text(t) for t in words):
            flags["cold_text"] = True
        if any(tx["CL-COLD-URT"].matches_text(t) for t in words):
            flags["cold_urticaria_text"] = True
        if ctx.in_set(allergy.code, "CL-RAYNAUD", with_text=True):
            flags["raynaud_text"] = True
        if flags:
            recorded = to_instant(allergy.recordedDate) or to_instant(allergy.onsetDateTime)
            facts.append(
                ctx.new_fact(
                    "allergy",
                    allergy,
                    **flags,
                    label=label(allergy.code),
                    date=recorded.date().isoformat() if recorded else None,
                )
            )
    return facts
