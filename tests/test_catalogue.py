"""The rule folder against the clinical catalogue: every rule id exists, is versioned,
cites its source, and has both a firing and a silent case."""

from __future__ import annotations

import re

import pytest

from .conftest import RULES_DIR, SHARED

# Rule ids of spec/clinical-rules.md §4, §5, §6 and the new rules of §10.3 (copied so the suite runs without ../shared;
# test_catalogue_ids_match_the_shared_catalogue checks the copy when ../shared is present).
CATALOGUE_IDS = [
    "CI-CV",
    "CI-HTN",
    "CI-ARR",
    "CI-DEVICE-CARDIAC",
    "CI-METAL",
    "CI-PREG",
    "CI-PREG-UNK",
    "CI-ANEMIA",
    "CI-IMMUNO",
    "CI-DMNEURO",
    "CI-SENSORY",
    "CI-PVD",
    "CI-DM-UNCTRL",
    "CI-COLD-URT",
    "CI-CRYOGLOB",
    "CI-RAYNAUD",
    "CI-COLD-AGGL",
    "CI-SITE-WOUND",
    "CI-ICE-TEST",
    "CI-RESP",
    "CI-EXT-WBC",
    "CI-ELDERLY",
    "CI-COSMETIC-WBC",
    "CI-ROSACEA-ACTIVE",
    "MD-NO-DATA",
    "CI-LESION-DX",
    "CI-CTD",  # catalogue 1.1, §10.3 "New rule ..."
    "DI-ANTICOAG",
    "DI-ANTIPLT",
    "DI-NSAID",
    "DI-CHEMO",
    "DI-IMMSUP",
    "DI-VASO",
    "DI-CNS",
    "TD-FREEZE",
    "TD-SYS-TEMP",
    "TD-SYS-DUR",
    "TD-SYS-PARAMS",
    "TD-SYS-FREQ",
    "TD-SKIN-INTERVAL",
    "TD-COSMETIC-COURSE",
    "TD-FREQ-INCREASE",
    "IV-PT-4H",
    "IV-LASER-2W",
    "IV-PEEL-1W",
    "PR-SYS-EXAM",
    "PR-SYS-SAFETY",
    "LC-HAIR",
    "LC-AFTERCARE",
]


def test_the_rule_folder_holds_exactly_the_catalogue(rulebook) -> None:
    assert sorted(r.id for r in rulebook.rules) == sorted(CATALOGUE_IDS)


@pytest.mark.parametrize("rule_id", CATALOGUE_IDS)
def test_every_rule_has_a_version_a_source_and_both_kinds_of_case(rulebook, rule_id) -> None:
    rule = rulebook.by_id[rule_id]
    assert re.fullmatch(r"\d+\.\d+\.\d+", rule.version)
    assert rule.sources and all(len(s) > 5 for s in rule.sources)
    cases = RULES_DIR / rule_id / "cases"
    assert list(cases.glob("fires-*.yaml")), f"{rule_id} has no firing case"
    assert list(cases.glob("silent-*.yaml")), f"{rule_id} has no silent case"
    for variant in rule.variants:
        assert len(variant.summary) < 140 or "{" in variant.summary


def test_immune_group_members_are_exactly_the_catalogue_three(rulebook) -> None:
    assert sorted(r.id for r in rulebook.rules if r.group == "immune") == ["CI-IMMUNO", "DI-CHEMO", "DI-IMMSUP"]


@pytest.mark.skipif(not (SHARED / "spec" / "clinical-rules.md").exists(), reason="../shared is not beside the repo")
def test_catalogue_ids_match_the_shared_catalogue() -> None:
    text = (SHARED / "spec" / "clinical-rules.md").read_text(encoding="utf-8")
    ids = set(re.findall(r"^\| ((?:CI|DI|TD|IV|PR|LC|MD)-[A-Z0-9-]+)", text, flags=re.MULTILINE))
    ids |= set(re.findall(r"\*\*New rule ((?:CI|DI|TD|IV|PR|LC|MD)-[A-Z0-9-]+)\*\*", text))
    assert ids == set(CATALOGUE_IDS)
