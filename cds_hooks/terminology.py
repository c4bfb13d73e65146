"""Value sets loaded once from ``rules/valuesets``, and membership tests over FHIR codings.

Rules never hold code lists (the engine hangs on long ``$or`` chains, and code lists are
data that clinical reviewers change on their own schedule). This module turns "is this
coding in CL-RAYNAUD" into a boolean that the facts step puts on a fact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from . import yamlfile

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
ATC = "http://www.whocc.no/atc"
LOCAL = "https://example.org/fhir/cryo-cds/CodeSystem/local"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# Stored VSAC expansions (RxNorm SCD/SBD codes), one JSON file per OID, below the value-set folder.
VSAC_FOLDER = "vsac"

# YAML key -> code system URI, for the keys that are exact code maps.
_EXACT_KEYS = {
    "snomed": SNOMED,
    "loinc": LOINC,
    "rxnorm": RXNORM,
    "rxnorm_products": RXNORM,
    "cpt": CPT,
    "local": LOCAL,
    "interpretation": INTERPRETATION,
}
# Some systems arrive under other spellings in real data.
_SYSTEM_ALIASES = {
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://terminology.hl7.org/CodeSystem/v2-0078": INTERPRETATION,
}


def normalise_system(system: str | None) -> str:
    """Map known alternative spellings of a code system to the catalogue's URI."""
    if not system:
        return ""
    return _SYSTEM_ALIASES.get(system, system)


def normalise_icd(code: str) -> str:
    """ICD-10-CM as compared (catalogue §10.1): upper-case, dot and spaces removed, so that
    ``E1142``, ``e11.42`` and ``E11.42`` are one code and match the prefix ``E11.4``."""
    return "".join(code.split()).upper().replace(".", "")


class ValueSetError(ValueError):
    """A value-set file is malformed; the message names the file and the set."""


@dataclass(frozen=True)
class _Range:
    low: str
    high: str

    def contains(self, code: str) -> bool:
        return self.low <= code[: len(self.low)] and code[: len(self.high)] <= self.high


def _parse_icd_entries(entries: Iterable[str]) -> tuple[tuple[str, ...], tuple[_Range, ...]]:
    prefixes: list[str] = []
    ranges: list[_Range] = []
    for raw in entries:
        entry = str(raw).strip().upper()
        if "-" in entry:
            low, high = (normalise_icd(part) for part in entry.split("-", 1))
            ranges.append(_Range(low, high))
        else:
            prefixes.append(normalise_icd(entry))
    return tuple(prefixes), tuple(ranges)


def _icd_matches(code: str, prefixes: tuple[str, ...], ranges: tuple[_Range, ...]) -> bool:
    code = normalise_icd(code)
    return any(code.startswith(p) for p in prefixes) or any(r.contains(code) for r in ranges)


def _cpt_ranges(entries: Iterable[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for raw in entries:
        low, high = str(raw).split("-", 1)
        out.append((int(low), int(high)))
    return tuple(out)


@dataclass(frozen=True)
class ValueSet:
    """One named code list: exact codes per system, ICD-10-CM prefixes/ranges (held without
    dots, see ``normalise_icd``), ATC
    prefixes, CPT ranges and an optional text pattern."""

    id: str
    title: str
    source: str
    exact: frozenset[tuple[str, str]]
    displays: Mapping[tuple[str, str], str]
    icd_prefixes: tuple[str, ...] = ()
    icd_ranges: tuple[_Range, ...] = ()
    icd_exclude_prefixes: tuple[str, ...] = ()
    icd_exclude_ranges: tuple[_Range, ...] = ()
    atc_prefixes: tuple[str, ...] = ()
    cpt_ranges: tuple[tuple[int, int], ...] = ()
    cpt_exclude: frozenset[str] = frozenset()
    text: re.Pattern[str] | None = None
    text_exclude: re.Pattern[str] | None = None
    ingredient_names: tuple[str, ...] = ()
    ingredient_atc: Mapping[str, str] = field(default_factory=dict)  # ATC substance code -> ingredient name
    unverified: frozenset[str] = field(default_factory=frozenset)
    # every ingredient name as a whole word, in one pattern: most texts name none of them, and
    # one search says so where a search per name cost hundreds (issue 15)
    ingredient_pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.ingredient_names and self.ingredient_pattern is None:
            names = "|".join(re.escape(n) for n in self.ingredient_names)
            object.__setattr__(self, "ingredient_pattern", re.compile(rf"(?<![a-z])(?:{names})(?![a-z])"))

    def _names_any(self, lowered: str) -> bool:
        return self.ingredient_pattern is not None and self.ingredient_pattern.search(lowered) is not None

    def has_code(self, system: str | None, code: str | None) -> bool:
        """True if the (system, code) pair belongs to this value set."""
        if not code:
            return False
        system = normalise_system(system)
        code = code.strip()
        if (system, code) in self.exact:
            return True
        if system == ICD10CM and (self.icd_prefixes or self.icd_ranges):
            if _icd_matches(code, self.icd_exclude_prefixes, self.icd_exclude_ranges):
                return False
            return _icd_matches(code, self.icd_prefixes, self.icd_ranges)
        if system == ATC and self.atc_prefixes:
            return any(code.upper().startswith(p) for p in self.atc_prefixes)
        if system == CPT and self.cpt_ranges and code.isdigit() and code not in self.cpt_exclude:
            return any(low <= int(code) <= high for low, high in self.cpt_ranges)
        return False

    def matches_text(self, text: str | None) -> bool:
        """True if free text matches the set's pattern (and not its exclusion)."""
        if not text or self.text is None:
            return False
        if self.text_exclude is not None and self.text_exclude.search(text):
            return False
        return self.text.search(text) is not None

    def ingredients_in_text(self, text: str | None) -> list[str]:
        """Every ingredient name found as a whole word in free text (a combination names several)."""
        if not text:
            return []
        lowered = text.lower()
        if not self._names_any(lowered):
            return []
        return [name for name in self.ingredient_names if name in lowered and _word(name).search(lowered)]

    def ingredient_in_text(self, text: str | None) -> str | None:
        """The ingredient name found as a whole word in free text, if any (matching way 4)."""
        if not text:
            return None
        lowered = text.lower()
        if not self._names_any(lowered):
            return None
        for name in self.ingredient_names:
            if name in lowered and _word(name).search(lowered):
                return name
        return None

    def display_for(self, system: str | None, code: str | None) -> str | None:
        return self.displays.get((normalise_system(system), (code or "").strip()))


@cache
def _word(name: str) -> re.Pattern[str]:
    """``name`` as a whole word (compiled once per name)."""
    return re.compile(rf"(?<![a-z]){re.escape(name)}(?![a-z])")


def _compile(pattern: str | None, where: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueSetError(f"{where}: bad regular expression {pattern!r}: {exc}") from exc


def load_vsac_expansion(path: Path) -> dict[str, str]:
    """RxNorm code -> display of one stored VSAC expansion (``rules/valuesets/vsac/<OID>.json``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueSetError(f"{path.name}: no stored VSAC expansion (expected {path})") from None
    except json.JSONDecodeError as exc:
        raise ValueSetError(f"{path.name}: not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping) or data.get("oid") != path.stem:
        raise ValueSetError(f"{path.name}: 'oid' must be {path.stem!r}")
    if data.get("system") != RXNORM:
        raise ValueSetError(f"{path.name}: system must be {RXNORM}, not {data.get('system')!r}")
    codes = data.get("codes")
    if not isinstance(codes, list) or not codes:
        raise ValueSetError(f"{path.name}: 'codes' must be a non-empty list")
    out: dict[str, str] = {}
    for entry in codes:
        if not (isinstance(entry, Mapping) and isinstance(entry.get("code"), str) and entry["code"].strip()):
            raise ValueSetError(f"{path.name}: every code must be a non-empty string: {entry!r}")
        out[entry["code"].strip()] = str(entry.get("display") or "")
    return out


def _expansion_codes(
    raw: Mapping[str, Any], where: str, expansions: Callable[[str], Mapping[str, str]] | None
) -> dict[str, str]:
    """The RxNorm products a set takes from its ``vsac_expansions`` (minus ``vsac_exclude``)."""
    oids = raw.get("vsac_expansions") or []
    excluded = {str(c).strip() for c in raw.get("vsac_exclude") or ()}
    if not isinstance(oids, list):
        raise ValueSetError(f"{where}: 'vsac_expansions' must be a list of VSAC OIDs")
    if not oids:
        if excluded:
            raise ValueSetError(f"{where}: 'vsac_exclude' without 'vsac_expansions'")
        return {}
    if expansions is None:
        raise ValueSetError(f"{where}: 'vsac_expansions' needs the value-set folder (use Terminology.load)")
    merged: dict[str, str] = {}
    for oid in oids:
        for code, display in expansions(str(oid)).items():
            merged.setdefault(code, display)
    stale = sorted(excluded - set(merged))
    if stale:
        raise ValueSetError(f"{where}: vsac_exclude codes {stale} are in none of its expansions")
    return {code: display for code, display in merged.items() if code not in excluded}


def _build(
    raw: Mapping[str, Any], where: str, expansions: Callable[[str], Mapping[str, str]] | None = None
) -> ValueSet:
    vs_id = raw.get("id")
    if not isinstance(vs_id, str) or not vs_id:
        raise ValueSetError(f"{where}: a value set has no id")
    where = f"{where} [{vs_id}]"
    exact: set[tuple[str, str]] = set()
    displays: dict[tuple[str, str], str] = {}
    for key, system in _EXACT_KEYS.items():
        codes = raw.get(key) or {}
        if not isinstance(codes, Mapping):
            raise ValueSetError(f"{where}: '{key}' must be a map of code -> details")
        for code, details in codes.items():
            pair = (system, str(code).strip())
            exact.add(pair)
            if isinstance(details, Mapping) and details.get("display"):
                displays[pair] = str(details["display"])
    # VSAC SCD/SBD expansions count like rxnorm_products (catalogue §1 medication matching (2));
    # a display the catalogue gives wins over the expansion's.
    for code, display in _expansion_codes(raw, where, expansions).items():
        pair = (RXNORM, code)
        exact.add(pair)
        if display:
            displays.setdefault(pair, display)
    ingredients = tuple(
        sorted(
            {
                str(d["display"]).lower()
                for d in (raw.get("rxnorm") or {}).values()
                if isinstance(d, Mapping) and d.get("display")
            },
            key=len,
            reverse=True,
        )
    )
    ingredient_atc = {
        atc.strip().upper(): str(d["display"]).lower()
        for d in (raw.get("rxnorm") or {}).values()
        if isinstance(d, Mapping) and d.get("display") and d.get("atc")
        for atc in str(d["atc"]).split("/")
        if len(atc.strip()) == 7  # substance level only
    }
    icd_p, icd_r = _parse_icd_entries(raw.get("icd10cm") or ())
    ex_p, ex_r = _parse_icd_entries(raw.get("exclude_icd10cm") or ())
    value_set = ValueSet(
        id=vs_id,
        title=str(raw.get("title") or vs_id),
        source=str(raw.get("source") or ""),
        exact=frozenset(exact),
        displays=displays,
        icd_prefixes=icd_p,
        icd_ranges=icd_r,
        icd_exclude_prefixes=ex_p,
        icd_exclude_ranges=ex_r,
        atc_prefixes=tuple(str(p).upper() for p in raw.get("atc") or ()),
        cpt_ranges=_cpt_ranges(raw.get("cpt_ranges") or ()),
        cpt_exclude=frozenset(str(c) for c in raw.get("exclude_cpt") or ()),
        text=_compile(raw.get("text"), where),
        text_exclude=_compile(raw.get("text_exclude"), where),
        ingredient_names=ingredients,
        ingredient_atc=ingredient_atc,
        unverified=frozenset(str(c) for c in raw.get("unverified") or ()),
    )
    if not (value_set.exact or icd_p or icd_r or value_set.atc_prefixes or value_set.cpt_ranges or value_set.text):
        raise ValueSetError(f"{where}: no codes and no text pattern")
    return value_set


_MEMBERSHIP_MEMO = 65_536


class Terminology:
    """All value sets by id. Built once per process from the YAML files."""

    def __init__(self, value_sets: Iterable[ValueSet]):
        self._sets: dict[str, ValueSet] = {}
        for vs in value_sets:
            if vs.id in self._sets:
                raise ValueSetError(f"value set {vs.id} is defined twice")
            self._sets[vs.id] = vs
        # (system, code) -> ids of the sets listing it exactly; the sets matched by pattern
        # (ICD-10-CM prefixes and ranges, ATC prefixes, CPT ranges) per system.
        exact: dict[tuple[str, str], set[str]] = {}
        for vs in self._sets.values():
            for pair in vs.exact:
                exact.setdefault(pair, set()).add(vs.id)
        self._exact_index = {pair: frozenset(ids) for pair, ids in exact.items()}
        self._by_pattern = {
            ICD10CM: tuple(vs for vs in self._sets.values() if vs.icd_prefixes or vs.icd_ranges),
            ATC: tuple(vs for vs in self._sets.values() if vs.atc_prefixes),
            CPT: tuple(vs for vs in self._sets.values() if vs.cpt_ranges),
        }
        self._memberships: dict[tuple[str, str], frozenset[str]] = {}

    def memberships(self, system: str | None, code: str | None) -> frozenset[str]:
        """The ids of every value set holding (system, code): ``vs.id in memberships(s, c)``
        exactly when ``vs.has_code(s, c)``. One dictionary look-up for a code seen before,
        where asking each set in turn costs a pass over every set's prefixes."""
        key = (normalise_system(system), (code or "").strip())
        found = self._memberships.get(key)
        if found is None:
            found = self._exact_index.get(key, frozenset())
            if key[1]:
                matched = [vs.id for vs in self._by_pattern.get(key[0], ()) if vs.has_code(*key)]
                found = found | frozenset(matched) if matched else found
            if len(self._memberships) >= _MEMBERSHIP_MEMO:
                self._memberships.clear()  # codes from outside are unbounded; keep memory bounded
            self._memberships[key] = found
        return found

    @classmethod
    def load(cls, folder: Path) -> Terminology:
        sets: list[ValueSet] = []
        files = sorted(folder.glob("*.yaml"))
        if not files:
            raise ValueSetError(f"{folder}: no value-set files (*.yaml)")
        loaded: dict[str, Mapping[str, str]] = {}

        def expansion(oid: str) -> Mapping[str, str]:
            if oid not in loaded:
                loaded[oid] = load_vsac_expansion(folder / VSAC_FOLDER / f"{oid}.json")
            return loaded[oid]

        for path in files:
            data = yamlfile.safe_load(path.read_text(encoding="utf-8")) or {}
            entries = data.get("valuesets")
            if not isinstance(entries, list):
                raise ValueSetError(f"{path.name}: expected a top-level 'valuesets' list")
            sets.extend(_build(entry, path.name, expansion) for entry in entries)
        return cls(sets)

    def __getitem__(self, vs_id: str) -> ValueSet:
        try:
            return self._sets[vs_id]
        except KeyError:
            raise ValueSetError(f"unknown value set {vs_id!r}") from None

    def __contains__(self, vs_id: object) -> bool:
        return vs_id in self._sets

    def ids(self) -> list[str]:
        return sorted(self._sets)

    def all(self) -> list[ValueSet]:
        return [self._sets[i] for i in sorted(self._sets)]
