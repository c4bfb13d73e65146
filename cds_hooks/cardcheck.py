"""Find card text a clinician should never read: our catalogue tags, section numbers, code
lists, raw FHIR ids, UUIDs and template gaps. Used by the tests (over every rule case and
fixture) and by ``benchmarks/cards.py`` (over real patients).

Only the sentences count: the collapsed last "Evidence" section exists to hold codes and ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EVIDENCE_MARK = "<details>"

_PROBLEMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "catalogue tag",
        re.compile(
            r"\b(SEED-[A-Z]|VEND|IIR\d\d|AAFP\d\d|IJDVL\d\d|MEDSC|CDSH|WHO-Hb|CL-[A-Z]+|F-(COND|MED|OBS|DEV|ALG)"
            r"|OBS-[A-Z]+|MED-[A-Z]+)\b|\[(V|C|I|W|P|F|D|A|CPT|CQL)\]"
        ),
    ),
    ("section number", re.compile(r"§|\b[Cc]atalogue\b")),
    ("rule id", re.compile(r"\b(CI|DI|TD|IV|LC|PR|MD|GRP)-[A-Z0-9]+(-[A-Z0-9]+)*\b")),
    ("assumption", re.compile(r"\bassumption\b|\bconfigurable\b", re.IGNORECASE)),
    (
        "raw id",
        re.compile(
            r"\b(Condition|MedicationRequest|MedicationStatement|MedicationAdministration|Medication|Observation"
            r"|Device|DeviceUseStatement|AllergyIntolerance|Procedure|ServiceRequest|Appointment|Patient"
            r"|Encounter)/[A-Za-z0-9\-.]+"
        ),
    ),
    ("uuid", re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)),
    (
        "code",
        re.compile(
            r"\b[A-TV-Z]\d{2}\.[0-9A-Z]{1,4}\b|\b[A-Z]\d{2}[–-][A-Z]?\d{2}\b|\b[A-Z]\d{2}[A-Z]{2}(\d{2})?\b"
            r"|\b\d{6,18}\b|\b\d{3,5}-\d\b|\b(ATC|SNOMED|ICD-10(-CM)?|LOINC|RxNorm|UCUM|CPT)\b"
        ),
    ),
    (
        "template gap",
        re.compile(
            r"\{[A-Za-z_:]*\}|\bnot recorded\b(?! *\))|\bNone\b|\bnan\b|\bunknown\b|\bdate unknown\b"
            r"|\s[,.;:]|,\s*,|\(\s*\)"
        ),
    ),
)
_ALLOWED = re.compile(r"\s*\(stop date not recorded\)")


def text_problems(text: str) -> list[str]:
    """The kinds of problem found in one piece of card text (empty: clean)."""
    text = _ALLOWED.sub("", text)
    return [name for name, pattern in _PROBLEMS if pattern.search(text)]


def card_problems(card: Mapping[str, Any]) -> list[str]:
    """Problems in a card's summary and in its detail before the Evidence section."""
    detail = str(card.get("detail") or "").split(EVIDENCE_MARK, 1)[0]
    found = [f"summary: {p}" for p in text_problems(str(card.get("summary", "")))]
    found += [f"detail: {p}" for p in text_problems(detail)]
    if len(str(card.get("summary", ""))) >= 140:
        found.append("summary: 140 characters or more")
    return found
