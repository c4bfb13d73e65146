"""Data checks for rules/valuesets/*.yaml (transcription of clinical-rules.md code lists) and the
stored VSAC expansions in rules/valuesets/vsac/ that the MED-* sets reference."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

VALUESET_DIR = Path(__file__).resolve().parent.parent / "rules" / "valuesets"
VSAC_DIR = VALUESET_DIR / "vsac"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"

EXPECTED_IDS = [
    # §2.1 / §2.2 order detection
    "ORDER.cryo-destructive",
    "ORDER.cryo-generic",
    "ORDER.cold",
    "ORDER.cryo-method",
    "ORDER.systemic-local",
    "ORDER.cold-local",
    "ORDER.cpt-cryo",
    "ORDER.cpt-destruction",
    "ORDER.cpt-cold-pack",
    "ORDER.not-cryotherapy",
    "ORDER.entire-body",
    "ORDER.text-fallback",
    "ORDER.systemic-text",
    "ORDER.cryo-evidence-text",
    "ORDER.liquid-nitrogen-text",
    "ORDER.cold-text",
    "ORDER.cpt-cold-pack-descriptor",  # §10.2
    # §3 shared code lists
    "CL-CV",
    "CL-HTN",
    "CL-HTN-CRISIS",
    "OBS-BP.panel",
    "OBS-BP.sbp",
    "OBS-BP.dbp",
    "OBS-BP.hr",
    "CL-ARR",
    "CL-CARDIAC-DEVICE.device",
    "CL-CARDIAC-DEVICE.condition",
    "CL-ELECTRONIC-IMPLANT.device",
    "CL-ELECTRONIC-IMPLANT.condition",
    "CL-METAL-IMPLANT.device",
    "CL-METAL-IMPLANT.condition",
    "CL-PREG.condition",
    "CL-PREG.status-obs",
    "CL-PREG.pregnant-answers",
    "CL-PREG.not-pregnant-answers",
    "CL-PREG.uncertain-answers",
    "CL-PREG.unknown-answers",
    "CL-PREG.hcg-tests",
    "CL-PREG.hcg-positive",
    "CL-PREG.hcg-negative",
    "CL-PREG.exclude",
    "CL-ANEMIA",
    "OBS-HB.mass",
    "OBS-HB.molar",
    "CL-IMMUNO.condition",
    "CL-IMMUNO.anc-obs",
    "CL-DM",
    "CL-DM-UNCTRL",
    "OBS-A1C",
    "CL-DM-NEURO",
    "CL-SENSORY-LOSS",
    "CL-PVD",
    "CL-COLD-URT",
    "CL-COLD-INTOL",
    "CL-COLD-INTOL.allergy-text",
    "CL-CRYOGLOB",
    "CL-RAYNAUD",
    "CL-COLD-AGGL",
    "CL-WOUND-INF",
    "CL-RESP",
    "CL-EXT-WBC.seizure",
    "CL-EXT-WBC.vte",
    "CL-EXT-WBC.claustrophobia",
    "CL-EXT-WBC.hypothyroid",
    "CL-GI-BLEED",
    "CL-ROSACEA",
    "CL-PIGMENT-SPOT",
    "OBS-PREEXAM.ecg-obs",
    "OBS-PREEXAM.ecg-proc",
    "OBS-PREEXAM.cbc",
    "OBS-PREEXAM.urine",
    "OBS-PREEXAM.ice-test",
    # §3 CL-REGION and hair-bearing set
    "REGION.FACE",
    "REGION.SCALP-HEAD",
    "REGION.NECK",
    "REGION.TRUNK",
    "REGION.UPPER-LIMB",
    "REGION.HAND",
    "REGION.LOWER-LIMB",
    "REGION.FOOT",
    "REGION.GENITAL-PERIANAL",
    "HAIR-BEARING",
    "HAIR-BEARING.male",
    # §2.3 indications
    "INDICATION.medical",
    "INDICATION.acne",
    "INDICATION.rosacea",
    "INDICATION.alopecia",
    # §5 medications
    "MED-ANTICOAG",
    "MED-ANTIPLT",
    "MED-NSAID",
    "MED-CHEMO",
    "MED-IMMSUP",
    "MED-VASO",
    "MED-CNS",
    "MED-ANTICOAG.current-use-icd",
    "MED-ANTIPLT.current-use-icd",
    "MED-NSAID.current-use-icd",
    "MED-CHEMO.procedure",
    "MED-CHEMO.icd",
    "MED-IMMSUP.glucocorticoid",
    "MED-IMMSUP.icd",
    # §6 procedures
    "PROC.physical-therapy",
    "PROC.laser",
    "PROC.peel",
    # §10.3 (catalogue 1.1): acute parts of two lists, the lists of the two new rules
    "CL-WOUND-INF.acute",
    "CL-RESP.acute",
    "CL-LESION-CHECK",
    "CL-MELANOMA",
    "CL-CTD",
]

CODED_MAP_KEYS = ("snomed", "loinc", "rxnorm", "rxnorm_products", "cpt", "local", "interpretation")
LIST_KEYS = (
    "icd10cm",
    "exclude_icd10cm",
    "atc",
    "cpt_ranges",
    "exclude_cpt",
    "unverified",
    "vsac_expansions",
    "vsac_exclude",
)
TEXT_KEYS = ("text", "text_exclude")
CODE_KEYS = (*CODED_MAP_KEYS, "icd10cm", "atc", "cpt_ranges", "vsac_expansions")  # keys that make a set non-empty
ALLOWED_KEYS = {"id", "title", "source", "note"} | set(CODED_MAP_KEYS) | set(LIST_KEYS) | set(TEXT_KEYS)
ENTRY_KEYS = {"display", "src", "atc"}

ICD_RE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?(-[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?)?$")
CPT_RE = re.compile(r"^[0-9]{4}[0-9A-Z]$")
CPT_RANGE_RE = re.compile(r"^([0-9]{5})-([0-9]{5})$")
ATC_RE = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
SNOMED_RE = re.compile(r"^[1-9][0-9]{5,17}$")
LOINC_RE = re.compile(r"^([0-9]{1,7}-[0-9]|LA[0-9]{1,7}-[0-9])$")
RXNORM_RE = re.compile(r"^[0-9]{1,8}$")
TAG_RE = re.compile(r"\[[^\]]+\]|UNVERIFIED|local|untagged")
OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def _load_all() -> list[tuple[str, dict[str, Any]]]:
    sets: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(VALUESET_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(doc, dict) and set(doc) == {"valuesets"}, path.name
        assert isinstance(doc["valuesets"], list) and doc["valuesets"], path.name
        for vs in doc["valuesets"]:
            assert isinstance(vs, dict), path.name
            sets.append((path.name, vs))
    return sets


ALL_SETS = _load_all()
BY_ID = {vs["id"]: vs for _, vs in ALL_SETS}


def _set_ids() -> list[str]:
    return [vs["id"] for _, vs in ALL_SETS]


def test_files_exist() -> None:
    assert len(list(VALUESET_DIR.glob("*.yaml"))) >= 10
    assert (VALUESET_DIR / "README.md").is_file()
    assert VSAC_DIR.is_dir() and VSAC_FILES


def test_no_duplicate_ids() -> None:
    dupes = [i for i, n in Counter(_set_ids()).items() if n > 1]
    assert not dupes


@pytest.mark.parametrize("vs_id", EXPECTED_IDS)
def test_expected_id_present_once(vs_id: str) -> None:
    assert _set_ids().count(vs_id) == 1


def test_no_unexpected_ids() -> None:
    assert set(_set_ids()) == set(EXPECTED_IDS)
    assert len(EXPECTED_IDS) == len(set(EXPECTED_IDS))


@pytest.mark.parametrize(("filename", "vs"), ALL_SETS, ids=[vs.get("id", "?") for _, vs in ALL_SETS])
def test_valueset_shape(filename: str, vs: dict[str, Any]) -> None:
    unknown = set(vs) - ALLOWED_KEYS
    assert not unknown, f"{filename}: unknown keys {unknown}"
    for key in ("id", "title", "source"):
        assert isinstance(vs.get(key), str) and vs[key].strip(), f"{filename}: {key}"
    assert any(vs.get(k) for k in CODE_KEYS) or vs.get("text"), f"{vs['id']}: no codes or text"
    for key, value in vs.items():
        # "Omit keys that are empty."
        if key not in ("id", "title", "source", "note"):
            assert value, f"{vs['id']}: empty {key}"


@pytest.mark.parametrize(("filename", "vs"), ALL_SETS, ids=[vs.get("id", "?") for _, vs in ALL_SETS])
def test_code_maps(filename: str, vs: dict[str, Any]) -> None:
    for key in CODED_MAP_KEYS:
        entries = vs.get(key)
        if entries is None:
            continue
        assert isinstance(entries, dict), f"{vs['id']}.{key}"
        for code, entry in entries.items():
            assert isinstance(code, str) and code == code.strip() and code, f"{vs['id']}.{key}: {code!r}"
            assert isinstance(entry, dict), f"{vs['id']}.{key}.{code}"
            assert set(entry) <= ENTRY_KEYS, f"{vs['id']}.{key}.{code}: {set(entry)}"
            assert isinstance(entry.get("display"), str) and entry["display"].strip()
            assert isinstance(entry.get("src"), str) and TAG_RE.search(entry["src"]), (
                f"{vs['id']}.{key}.{code}: src {entry.get('src')!r}"
            )
            if "atc" in entry:
                assert key == "rxnorm"
                assert all(ATC_RE.match(a) for a in entry["atc"].split("/")), entry["atc"]
        pattern = {
            "snomed": SNOMED_RE,
            "loinc": LOINC_RE,
            "rxnorm": RXNORM_RE,
            "rxnorm_products": RXNORM_RE,
            "cpt": CPT_RE,
        }.get(key)
        if pattern is not None:
            bad = [c for c in entries if not pattern.match(c)]
            assert not bad, f"{vs['id']}.{key}: {bad}"
    if "rxnorm" in vs:
        for code, entry in vs["rxnorm"].items():
            assert entry["display"] == entry["display"].lower(), f"{vs['id']} {code}: display lower-case"


@pytest.mark.parametrize(("filename", "vs"), ALL_SETS, ids=[vs.get("id", "?") for _, vs in ALL_SETS])
def test_code_lists(filename: str, vs: dict[str, Any]) -> None:
    for key in LIST_KEYS:
        items = vs.get(key)
        if items is None:
            continue
        assert isinstance(items, list), f"{vs['id']}.{key}"
        assert all(isinstance(i, str) for i in items), f"{vs['id']}.{key}: {items}"
        assert len(items) == len(set(items)), f"{vs['id']}.{key}: duplicates"
    for key in ("icd10cm", "exclude_icd10cm"):
        bad = [c for c in vs.get(key, []) if not ICD_RE.match(c)]
        assert not bad, f"{vs['id']}.{key}: {bad}"
    for code in vs.get("atc", []):
        assert ATC_RE.match(code), f"{vs['id']}.atc: {code}"
    for rng in vs.get("cpt_ranges", []):
        m = CPT_RANGE_RE.match(rng)
        assert m and int(m.group(1)) <= int(m.group(2)), f"{vs['id']}.cpt_ranges: {rng}"
    for code in vs.get("exclude_cpt", []):
        assert CPT_RE.match(code), f"{vs['id']}.exclude_cpt: {code}"


@pytest.mark.parametrize(("filename", "vs"), ALL_SETS, ids=[vs.get("id", "?") for _, vs in ALL_SETS])
def test_regexes_compile(filename: str, vs: dict[str, Any]) -> None:
    for key in TEXT_KEYS:
        if key in vs:
            assert isinstance(vs[key], str)
            assert vs[key].startswith("(?i)"), f"{vs['id']}.{key}: use inline (?i)"
            re.compile(vs[key])


def test_icd_regex_rejects_garbage() -> None:
    for bad in ("I20–I28", "E11.", "e11", "Z95.81000", "I20-", "O00-O9A minus"):
        assert not ICD_RE.match(bad)
    for good in ("O00-O9A", "Z3A", "L02.411-L02.414", "Z95.810", "I20-I28"):
        assert ICD_RE.match(good)


# --- stored VSAC expansions (rules/valuesets/vsac/<OID>.json) ---------------------------------

VSAC_FILES = sorted(VSAC_DIR.glob("*.json"))
REFERENCED_OIDS = {oid for _, vs in ALL_SETS for oid in vs.get("vsac_expansions", [])}
# The catalogue's MED-* blocks cite these OIDs for RxNorm products (§5 "vsac:" lines); 2.16.840.1.113883.3.526.3.1027
# (ChemotherapyAdministration) is cited too but is a procedure set with no RxNorm code (MED-CHEMO.procedure).
CATALOGUE_MED_OIDS = {
    "MED-ANTICOAG": ["2.16.840.1.113762.1.4.1248.22", "2.16.840.1.113883.3.3157.4045"],
    "MED-CHEMO": ["2.16.840.1.113762.1.4.1151.60"],
    "MED-IMMSUP": ["2.16.840.1.113762.1.4.1151.32"],
    "MED-IMMSUP.glucocorticoid": ["2.16.840.1.113883.3.464.1003.196.12.1266"],
    "MED-VASO": ["2.16.840.1.113762.1.4.1248.164", "2.16.840.1.113883.3.526.3.1174", "2.16.840.1.113762.1.4.1248.170"],
    "MED-CNS": [
        "2.16.840.1.113762.1.4.1248.120",
        "2.16.840.1.113883.3.464.1003.196.12.1522",
        "2.16.840.1.113883.3.464.1003.196.12.1523",
    ],
}


def _vsac(oid: str) -> dict[str, Any]:
    data = json.loads((VSAC_DIR / f"{oid}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_every_referenced_expansion_is_stored_and_every_stored_one_referenced() -> None:
    stored = {p.stem for p in VSAC_FILES}
    assert REFERENCED_OIDS, "no value set references a VSAC expansion"
    assert REFERENCED_OIDS - stored == set(), "referenced but not stored"
    assert stored - REFERENCED_OIDS == set(), "stored but referenced by no value set"


def test_the_med_sets_reference_the_oids_the_catalogue_cites() -> None:
    got = {vs["id"]: vs["vsac_expansions"] for _, vs in ALL_SETS if "vsac_expansions" in vs}
    assert got == CATALOGUE_MED_OIDS
    for vs_id, oids in got.items():
        assert all(OID_RE.match(oid) for oid in oids), vs_id
        assert all(oid in BY_ID[vs_id]["source"] for oid in oids), f"{vs_id}: cite each OID in 'source'"


@pytest.mark.parametrize("path", VSAC_FILES, ids=[p.stem for p in VSAC_FILES])
def test_stored_expansion_shape_and_source(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["oid"] == path.stem and OID_RE.match(data["oid"])
    assert data["url"] == f"http://cts.nlm.nih.gov/fhir/ValueSet/{data['oid']}"
    for key in ("name", "title", "version"):
        assert isinstance(data.get(key), str) and data[key], f"{path.name}: {key}"
    assert isinstance(data["expansion"].get("timestamp"), str) and data["expansion"]["timestamp"]
    source = data["source"]
    assert set(source) == {"repo", "commit", "path"}, path.name
    assert source["repo"].startswith("cqframework/ecqm-content-"), source
    assert SHA_RE.match(source["commit"]), source
    assert source["path"].endswith(f"valueset-{data['oid']}.json"), source
    # RxNorm only, with its displays
    assert data["system"] == RXNORM_SYSTEM
    assert data["other_systems_dropped"] == {}, f"{path.name}: non-RxNorm codes in a medication expansion"
    codes = data["codes"]
    assert isinstance(codes, list) and codes and data["count"] == len(codes)
    for entry in codes:
        assert set(entry) == {"code", "display"}, entry
        assert isinstance(entry["code"], str) and RXNORM_RE.match(entry["code"]), entry
        assert isinstance(entry["display"], str) and entry["display"].strip() == entry["display"] != "", entry
    dupes = [c for c, n in Counter(e["code"] for e in codes).items() if n > 1]
    assert not dupes, f"{path.name}: duplicate codes {dupes}"


def test_a_code_has_one_display_in_every_expansion() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for path in VSAC_FILES:
        for entry in _vsac(path.stem)["codes"]:
            first = seen.setdefault(entry["code"], (entry["display"], path.stem))
            assert first[0] == entry["display"], (entry, first)


def test_vsac_exclusions_are_in_the_expansions_and_explained() -> None:
    for _, vs in ALL_SETS:
        excluded = vs.get("vsac_exclude", [])
        if not excluded:
            continue
        assert vs.get("vsac_expansions"), f"{vs['id']}: vsac_exclude without vsac_expansions"
        listed = {e["code"] for oid in vs["vsac_expansions"] for e in _vsac(oid)["codes"]}
        for code in excluded:
            assert code in listed, f"{vs['id']}: excluded {code} is in none of its expansions"
            assert code in vs.get("note", ""), f"{vs['id']}: say in the note why {code} is excluded"


def test_the_catalogue_scd_examples_are_in_the_cited_expansions() -> None:
    # §5 "VSAC SCD expansions give product-level codes": every [V] SCD example of a class with cited
    # RxNorm expansions is in one of them, except MED-CNS gabapentin/pregabalin (no cited gabapentinoid set).
    not_in_expansions = {"310431", "483450"}
    for vs_id, oids in CATALOGUE_MED_OIDS.items():
        listed = {e["code"] for oid in oids for e in _vsac(oid)["codes"]}
        examples = {c for c, e in BY_ID[vs_id].get("rxnorm_products", {}).items() if e["src"] == "[V]"}
        assert examples - listed - not_in_expansions == set(), vs_id


def test_vsac_spot_checks() -> None:
    chemo = {e["code"]: e["display"] for e in _vsac("2.16.840.1.113762.1.4.1151.60")["codes"]}
    assert chemo["1860480"] == "1 ML docetaxel 20 MG/ML Injection"  # Jerrell_Gerlach's docetaxel (Synthea)
    assert len(chemo) == 170
    counts = {p.stem: _vsac(p.stem)["count"] for p in VSAC_FILES}
    assert counts == {
        "2.16.840.1.113762.1.4.1151.32": 124,
        "2.16.840.1.113762.1.4.1151.60": 170,
        "2.16.840.1.113762.1.4.1248.120": 312,
        "2.16.840.1.113762.1.4.1248.164": 347,
        "2.16.840.1.113762.1.4.1248.170": 53,
        "2.16.840.1.113762.1.4.1248.22": 66,
        "2.16.840.1.113883.3.3157.4045": 30,
        "2.16.840.1.113883.3.464.1003.196.12.1266": 59,
        "2.16.840.1.113883.3.464.1003.196.12.1522": 86,
        "2.16.840.1.113883.3.464.1003.196.12.1523": 211,
        "2.16.840.1.113883.3.526.3.1174": 87,
    }
    assert BY_ID["MED-IMMSUP.glucocorticoid"]["vsac_exclude"] == ["1085728"]


# --- spot checks against the catalogue -------------------------------------------------------


def test_spot_checks() -> None:
    assert set(BY_ID["ORDER.cold"]["snomed"]) == {"182660006", "113132006", "229578001", "3831002", "229586001"}
    dest = BY_ID["ORDER.cpt-destruction"]
    assert dest["cpt_ranges"] == ["17260-17286"]
    assert {"46916", "54056", "56501", "57511", "17260-17286"} <= set(dest["unverified"])
    preg = BY_ID["CL-PREG.condition"]
    assert preg["icd10cm"] == ["O00-O9A", "Z33.1", "Z34", "Z3A"]
    assert preg["exclude_icd10cm"] == ["O80-O82", "O85-O94"]
    assert "250423000" in preg["snomed"]
    assert BY_ID["CL-PREG.hcg-positive"]["interpretation"].keys() == {"POS"}
    assert BY_ID["CL-PREG.hcg-negative"]["interpretation"].keys() == {"NEG"}
    vaso = BY_ID["MED-VASO"]
    assert "7812" not in vaso["rxnorm"] and "7812" in vaso["unverified"]
    assert "oxymetazoline" in vaso["note"]
    assert {"1546356"} <= set(BY_ID["MED-ANTICOAG"]["unverified"])
    assert {"2555", "3002"} <= set(BY_ID["MED-CHEMO"]["unverified"])
    chemo_proc = BY_ID["MED-CHEMO.procedure"]
    assert chemo_proc["cpt_ranges"] == ["96401-96549"]
    assert chemo_proc["exclude_cpt"] == ["96405", "96406"]
    assert BY_ID["MED-IMMSUP.glucocorticoid"]["atc"] == ["H02AB"]
    assert set(BY_ID["MED-IMMSUP.glucocorticoid"]["rxnorm"]) == {"8640", "8638", "6902", "3264"}
    face = BY_ID["REGION.FACE"]["snomed"]
    assert {"41310005", "40069000"} <= set(face)
    assert {"45981001", "72939005"} <= set(BY_ID["REGION.UPPER-LIMB"]["snomed"])
    hair = set(BY_ID["HAIR-BEARING"]["snomed"])
    assert set(BY_ID["REGION.SCALP-HEAD"]["snomed"]) <= hair
    assert {"367577003", "85803001", "386045008"} <= hair
    assert set(BY_ID["HAIR-BEARING.male"]["snomed"]) == {"23747009", "16251004", "244097004", "36141000"}
    assert BY_ID["INDICATION.medical"]["icd10cm"] == [
        "B07",
        "L57.0",
        "L70",
        "L71",
        "L63-L65",
        "G89.2",
        "G89.4",
        "M79.7",
        "M05-M06",
    ]
    assert BY_ID["PROC.peel"]["unverified"] == ["17360"]
    assert set(BY_ID["PROC.physical-therapy"]["unverified"]) == {"97110", "97140"}


def test_text_regex_behaviour() -> None:
    def m(vs_id: str, s: str) -> bool:
        vs = BY_ID[vs_id]
        hit = re.search(vs["text"], s) is not None
        if hit and "text_exclude" in vs and re.search(vs["text_exclude"], s):
            return False
        return hit

    assert m("ORDER.text-fallback", "Cryotherapy of wart")
    assert m("ORDER.text-fallback", "Liquid nitrogen spray")
    assert not m("ORDER.text-fallback", "Transfusion of cryoprecipitate")
    assert m("ORDER.systemic-text", "Whole-body cryotherapy (cryochamber)")
    assert m("ORDER.cryo-evidence-text", "LN2 freeze")
    assert not m("ORDER.liquid-nitrogen-text", "LN20")
    assert m("ORDER.cold-text", "Cold pack") and not m("ORDER.cold-text", "coldness")
    assert m("CL-COLD-INTOL.allergy-text", "Cold allergy")
    assert not m("CL-COLD-INTOL.allergy-text", "Common cold")
    assert m("CL-COLD-URT", "cold-induced urticaria") and m("CL-COLD-URT", "Cold urticaria")
    assert m("CL-COLD-AGGL", "Paroxysmal cold haemoglobinuria")
    assert m("PROC.laser", "Microneedling session") and m("PROC.laser", "Fractional laser")
    assert m("PROC.peel", "Chemical peel") and m("PROC.peel", "exfoliation")
