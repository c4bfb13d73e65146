"""Which draft orders are cryotherapy, and of which modality (catalogue §2).

A cryotherapy order is recognised by code (SNOMED, CPT with cryo evidence, local code) or,
failing that, by its text; codes that merely contain "cryo" (cryoprecipitate,
cryoablation...) are excluded first. The modality decides every rule's severity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .concepts import codings, in_set, joined_text, texts
from .record import ref_of
from .terminology import CPT, LOCAL, Terminology

LOCAL_DESTRUCTIVE = "local-destructive"
LOCAL_COLD = "local-cold"
SYSTEMIC = "systemic"
MODALITIES = (LOCAL_DESTRUCTIVE, LOCAL_COLD, SYSTEMIC)

TEMPERATURE_URL = "https://example.org/fhir/cryo-cds/StructureDefinition/cryo-target-temperature"
DURATION_URL = "https://example.org/fhir/cryo-cds/StructureDefinition/cryo-application-duration"
CYCLES_URL = "https://example.org/fhir/cryo-cds/StructureDefinition/freeze-thaw-cycles"


@dataclass(frozen=True)
class SystemicHeuristic:
    """Catalogue §2.2 rule 4: an order without a systemic code, site or words is whole-body
    cryotherapy when it is this cold for this long and names no lesion site. The thresholds
    are clinical policy, so they come from rules/parameters.yaml."""

    max_temp_c: float
    min_seconds: float

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SystemicHeuristic:
        return cls(float(parameters["systemic_max_temp_c"]), float(parameters["systemic_min_application_s"]))

    def says_systemic(self, temperature_c: float | None, seconds: float | None) -> bool:
        return (
            temperature_c is not None
            and seconds is not None
            and temperature_c <= self.max_temp_c
            and seconds >= self.min_seconds
        )


@dataclass(frozen=True)
class CryoOrder:
    """A draft order recognised as cryotherapy."""

    ref: str
    resource: Any
    modality: str
    local_code: str | None  # whole-body-cryotherapy, cryomassage, ... when coded locally
    detected_by: str


def order_text(resource: Any, *, skip_cpt_destruction: Terminology | None = None) -> str:
    """code.text, coding displays, orderDetail text/displays and notes, joined.

    CPT destruction descriptors list every method ("laser, electrosurgery, cryosurgery..."),
    so their displays are left out when looking for evidence of cryo."""
    code = getattr(resource, "code", None)
    code_text = getattr(code, "text", None)
    parts: list[str] = [str(code_text)] if code_text else []
    for coding in getattr(code, "coding", None) or ():
        display = getattr(coding, "display", None)
        if not display:
            continue
        if skip_cpt_destruction is not None and skip_cpt_destruction["ORDER.cpt-destruction"].has_code(
            coding.system, coding.code
        ):
            continue
        parts.append(str(display))
    parts.extend(texts(getattr(resource, "orderDetail", None)))
    parts.extend(str(n.text) for n in getattr(resource, "note", None) or () if getattr(n, "text", None))
    return joined_text(parts)


def extension_quantity(resource: Any, url: str) -> Any | None:
    for ext in getattr(resource, "extension", None) or ():
        if ext.url == url:
            return ext.valueQuantity if ext.valueQuantity is not None else ext.valueInteger
    return None


def has_lesion_site(resource: Any, terminology: Terminology) -> bool:
    """Any bodySite other than 38266002 Entire body."""
    entire = terminology["ORDER.entire-body"]
    for site in getattr(resource, "bodySite", None) or ():
        codes = list(codings(site))
        if not codes and getattr(site, "text", None):
            return True
        if any(not entire.has_code(system, code) for system, code, _ in codes):
            return True
    return False


def _local_code(resource: Any) -> str | None:
    for system, code, _ in codings(getattr(resource, "code", None)):
        if system == LOCAL:
            return code
    return None


def detect(
    resource: Any, terminology: Terminology, *, destruction_codes_imply_cryo: bool = False, any_status: bool = False
) -> str | None:
    """How the resource was recognised as cryotherapy (for the audit), or None. A Procedure is a
    draft order only in status 'preparation'; ``any_status`` also accepts past sessions."""
    resource_type = resource.get_resource_type()
    if resource_type == "Procedure" and resource.status != "preparation" and not any_status:
        return None
    if resource_type not in ("ServiceRequest", "Procedure"):
        return None
    code = getattr(resource, "code", None)
    if in_set(code, terminology["ORDER.not-cryotherapy"]):
        return None
    for vs_id in (
        "ORDER.cryo-destructive",
        "ORDER.cryo-generic",
        "ORDER.cold",
        "ORDER.systemic-local",
        "ORDER.cold-local",
        "ORDER.cpt-cryo",
    ):
        for system, value, _ in codings(code):
            if terminology[vs_id].has_code(system, value):
                return f"code {value}"
    text = order_text(resource, skip_cpt_destruction=terminology)
    own_words = own_order_words(resource, terminology)
    for system, value, _ in codings(code):
        if terminology["ORDER.cpt-destruction"].has_code(system, value) and (
            destruction_codes_imply_cryo or _has_cryo_evidence(resource, text, terminology)
        ):
            return f"CPT {value} with cryo evidence"
        if terminology["ORDER.cpt-cold-pack"].has_code(system, value) and _says_cold(resource, own_words, terminology):
            return f"CPT {value} with cold in the order's own words"
    if terminology["ORDER.text-fallback"].matches_text(own_words):
        return "text"
    return None


def _concept_key(concept: Any) -> tuple[Any, ...] | None:
    if concept is None:
        return None
    codes = tuple((c.system, c.code, c.display) for c in getattr(concept, "coding", None) or ())
    return (getattr(concept, "text", None), codes)


def detection_key(resource: Any) -> tuple[Any, ...]:
    """Everything ``detect`` reads of a resource: two resources with the same key are detected
    alike, so a record's hundreds of past procedures are told apart once per kind."""
    return (
        resource.get_resource_type(),
        getattr(resource, "status", None),
        _concept_key(getattr(resource, "code", None)),
        tuple(_concept_key(c) for c in getattr(resource, "orderDetail", None) or ()),
        tuple(getattr(n, "text", None) for n in getattr(resource, "note", None) or ()),
    )


def own_order_words(resource: Any, terminology: Terminology) -> str:
    """What the orderer wrote: code.text, orderDetail and notes, without coding displays and
    without the CPT 97010 descriptor ("hot or cold packs"), which EHRs copy into code.text and
    which says "cold" for every hot pack (catalogue §10.2)."""
    code_text = getattr(getattr(resource, "code", None), "text", None)
    parts = [str(code_text) if code_text else None]
    parts += texts(getattr(resource, "orderDetail", None))
    parts += [str(n.text) for n in getattr(resource, "note", None) or () if getattr(n, "text", None)]
    descriptor = terminology["ORDER.cpt-cold-pack-descriptor"].text
    joined = joined_text(parts)
    return descriptor.sub(" ", joined) if descriptor is not None else joined


def _says_cold(resource: Any, own_words: str, terminology: Terminology) -> bool:
    """CPT 97010 is cold therapy only when the order's own words say cold, ice or cryo, or a
    cold-therapy or cryotherapy code stands beside it (in code or orderDetail)."""
    cold_codes = ("ORDER.cold", "ORDER.cryo-generic", "ORDER.cryo-method")
    concepts = [getattr(resource, "code", None), getattr(resource, "orderDetail", None)]
    if any(in_set(c, terminology[v]) for c in concepts for v in cold_codes):
        return True
    return terminology["ORDER.cold-text"].matches_text(own_words)


def _has_cryo_evidence(resource: Any, text: str, terminology: Terminology) -> bool:
    cryo_codes = ("ORDER.cryo-destructive", "ORDER.cryo-generic")
    if any(in_set(getattr(resource, "code", None), terminology[v]) for v in cryo_codes):
        return True
    if in_set(getattr(resource, "orderDetail", None), terminology["ORDER.cryo-method"]):
        return True
    return terminology["ORDER.cryo-evidence-text"].matches_text(text)


def classify(resource: Any, terminology: Terminology, systemic: SystemicHeuristic) -> str:
    """Modality by the first matching rule of catalogue §2.2."""
    code = getattr(resource, "code", None)
    if in_set(code, terminology["ORDER.systemic-local"]):
        return SYSTEMIC
    if any(in_set(site, terminology["ORDER.entire-body"]) for site in getattr(resource, "bodySite", None) or ()):
        return SYSTEMIC
    text = order_text(resource)
    if terminology["ORDER.systemic-text"].matches_text(text):
        return SYSTEMIC
    lesion_site = has_lesion_site(resource, terminology)
    temperature = to_celsius(extension_quantity(resource, TEMPERATURE_URL))
    duration = application_seconds(resource)
    if systemic.says_systemic(temperature, duration) and not lesion_site:
        return SYSTEMIC
    if in_set(code, terminology["ORDER.cold-local"]):
        return LOCAL_COLD
    destructive_codes = ("ORDER.cryo-destructive", "ORDER.cpt-destruction", "ORDER.cpt-cryo")
    if any(in_set(code, terminology[v]) for v in destructive_codes):
        return LOCAL_DESTRUCTIVE
    if lesion_site and terminology["ORDER.liquid-nitrogen-text"].matches_text(text):
        return LOCAL_DESTRUCTIVE
    return LOCAL_COLD


def to_celsius(quantity: Any) -> float | None:
    """A temperature Quantity in °C (UCUM Cel, K or [degF])."""
    if quantity is None or getattr(quantity, "value", None) is None:
        return None
    value = float(quantity.value)
    unit = (getattr(quantity, "code", None) or getattr(quantity, "unit", None) or "Cel").strip()
    if unit in ("K",):
        return value - 273.15
    if unit in ("[degF]", "degF", "°F"):
        return (value - 32) * 5 / 9
    return value


_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "ms": 0.001,
}  # UCUM codes and common spellings


def to_seconds(value: Any, unit: str | None) -> float | None:
    if value is None:
        return None
    factor = _SECONDS.get((unit or "s").strip().lower())
    return None if factor is None else float(value) * factor


def application_seconds(resource: Any) -> float | None:
    """Per-application time: occurrenceTiming.repeat.duration, else the duration extension."""
    timing = getattr(resource, "occurrenceTiming", None)
    repeat = getattr(timing, "repeat", None) if timing is not None else None
    if repeat is not None and repeat.duration is not None:
        return to_seconds(repeat.duration, repeat.durationUnit)
    quantity = extension_quantity(resource, DURATION_URL)
    if quantity is not None and getattr(quantity, "value", None) is not None:
        return to_seconds(quantity.value, getattr(quantity, "code", None) or getattr(quantity, "unit", None))
    return None


_CODE_SETS = (
    "ORDER.cryo-destructive",
    "ORDER.cryo-generic",
    "ORDER.cold",
    "ORDER.systemic-local",
    "ORDER.cold-local",
    "ORDER.cpt-cryo",
    "ORDER.cpt-destruction",
)  # CPT 97010 only with cold words


def looks_like_cryotherapy(raw: Any, terminology: Terminology) -> bool:
    """For a draft that is not valid FHIR: does anything in it name cryotherapy? Then it must
    not pass unchecked in silence."""
    if not isinstance(raw, dict) or raw.get("resourceType") not in ("ServiceRequest", "Procedure"):
        return False
    dump = json.dumps(raw, ensure_ascii=False)
    descriptor = terminology["ORDER.cpt-cold-pack-descriptor"].text
    words = descriptor.sub(" ", dump) if descriptor is not None else dump
    if terminology["ORDER.text-fallback"].matches_text(words):
        return True
    if any(f'"{code}"' in dump for vs in _CODE_SETS for _system, code in terminology[vs].exact):
        return True
    cold_pack = any(f'"{code}"' in dump for _system, code in terminology["ORDER.cpt-cold-pack"].exact)
    return cold_pack and terminology["ORDER.cold-text"].matches_text(words)


def find_cryo_orders(
    drafts: Sequence[Any],
    terminology: Terminology,
    selections: Sequence[str] | None,
    *,
    systemic: SystemicHeuristic,
    destruction_codes_imply_cryo: bool = False,
) -> list[CryoOrder]:
    """The cryotherapy orders to evaluate: those named in ``selections`` (order-select), or
    every cryotherapy draft when there are no selections (order-sign)."""
    chosen = set(selections) if selections is not None else None
    found = []
    for resource in drafts:
        ref = ref_of(resource)
        if chosen is not None and ref not in chosen:
            continue
        how = detect(resource, terminology, destruction_codes_imply_cryo=destruction_codes_imply_cryo)
        if how is not None:
            found.append(
                CryoOrder(ref, resource, classify(resource, terminology, systemic), _local_code(resource), how)
            )
    return found


__all__ = ["CPT", "MODALITIES", "CryoOrder", "SystemicHeuristic", "classify", "detect", "find_cryo_orders"]
