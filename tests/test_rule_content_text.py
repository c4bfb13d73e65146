"""The free-text patterns of catalogue 1.1 (§10.3) on the words real records use: what is cold
itself or a cold reaction (not a cold medicine), Raynaud's, and lesions to diagnose first."""

from __future__ import annotations

import pytest

from cds_hooks.terminology import Terminology


@pytest.mark.parametrize(
    ("text", "cold"),
    [
        ("Cold", True),
        ("  cold  ", True),
        ("Cold air", True),
        ("cold weather", True),
        ("Cold temperature", True),
        ("cold exposure", True),
        ("Cold water", True),
        ("Ice", True),
        ("Cold urticaria", True),
        ("cold-induced urticaria", True),
        ("Cold allergy", True),
        ("Cold intolerance", True),
        ("cold hypersensitivity", True),
        ("Cold & flu tablets", False),
        ("cold medicine", False),
        ("Common cold remedy", False),
        ("Cold sore cream", False),
        ("Iced tea", False),
        ("Coldrex", False),
    ],
)
def test_cold_allergy_text(terminology: Terminology, text: str, cold: bool) -> None:
    assert terminology["CL-COLD-INTOL.allergy-text"].matches_text(text) is cold


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Raynaud's phenomenon", True),
        ("RAYNAUD SYNDROME", True),
        ("secondary Raynauds", True),
        ("Cold fingers", False),
    ],
)
def test_raynaud_text(terminology: Terminology, text: str, hit: bool) -> None:
    assert terminology["CL-RAYNAUD"].matches_text(text) is hit


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Naevus, left cheek", True),
        ("dysplastic nevus", True),
        ("multiple naevi", True),
        ("nevi", True),
        ("Changing mole", True),
        ("pigmented lesion of back", True),
        ("Lentigo maligna", True),
        ("Atypical melanocytic lesion", True),
        ("Common wart", False),
        ("Seborrhoeic keratosis", False),
        ("Molluscum contagiosum", False),
        ("Nevirapine rash", False),
    ],
)
def test_lesion_to_diagnose_text(terminology: Terminology, text: str, hit: bool) -> None:
    assert terminology["CL-LESION-CHECK"].matches_text(text) is hit


@pytest.mark.parametrize(
    ("code", "acute"),
    [
        ("J06.9", True),
        ("J00", True),
        ("J18.9", True),
        ("J22", True),
        ("J44.1", False),
        ("J45.909", False),
        ("J96.00", False),
    ],
)
def test_acute_respiratory_codes(terminology: Terminology, code: str, acute: bool) -> None:
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    assert terminology["CL-RESP"].has_code(icd, code)
    assert terminology["CL-RESP.acute"].has_code(icd, code) is acute


@pytest.mark.parametrize(
    ("code", "acute"),
    [
        ("S61.411A", True),
        ("S01.81XA", True),
        ("L03.113", True),
        ("L08.9", True),
        ("L97.211", False),
        ("L89.152", False),
        ("L98.491", False),
    ],
)
def test_acute_wound_codes(terminology: Terminology, code: str, acute: bool) -> None:
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    assert terminology["CL-WOUND-INF"].has_code(icd, code)
    assert terminology["CL-WOUND-INF.acute"].has_code(icd, code) is acute
