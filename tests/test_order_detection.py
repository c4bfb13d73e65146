"""Order detection and modality (catalogue §2.1, §2.2 as amended by §10.2): word prefixes in
the order text, and CPT 97010 (hot or cold packs) only when the order's own words say cold."""

from __future__ import annotations

from typing import Any

import pytest

from cds_hooks.orders import (
    DURATION_URL,
    LOCAL_COLD,
    LOCAL_DESTRUCTIVE,
    SYSTEMIC,
    TEMPERATURE_URL,
    SystemicHeuristic,
    classify,
    detect,
    detection_key,
    looks_like_cryotherapy,
)
from cds_hooks.record import parse_resource
from cds_hooks.rulebook import load_parameters
from cds_hooks.terminology import Terminology

from .conftest import RULES_DIR

CPT = "http://www.ama-assn.org/go/cpt"
SCT = "http://snomed.info/sct"
DESCRIPTOR = "Application of a modality to 1 or more areas; hot or cold packs"
HEURISTIC = SystemicHeuristic.from_parameters(load_parameters(RULES_DIR))
HAND = [{"coding": [{"system": SCT, "code": "33712006", "display": "Skin of hand"}]}]


def _order(code: dict[str, Any], **extra: Any) -> Any:
    raw = {
        "resourceType": "ServiceRequest",
        "id": "o1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": code,
        **extra,
    }
    resource, problem = parse_resource(raw)
    assert resource is not None, problem
    return resource


def _cpt97010(text: str | None = None, display: str | None = DESCRIPTOR, **extra: Any) -> Any:
    coding: dict[str, Any] = {"system": CPT, "code": "97010"}
    if display:
        coding["display"] = display
    code: dict[str, Any] = {"coding": [coding]}
    if text:
        code["text"] = text
    return _order(code, **extra)


@pytest.mark.parametrize(
    ("text", "modality"),
    [
        ("Aerocryotherapy", SYSTEMIC),
        ("Aerocryotherapy session, 3 minutes", SYSTEMIC),
        ("Cryostimulation session", SYSTEMIC),
        ("cryostimulation", SYSTEMIC),
        ("General cryotherapies, course of 10", SYSTEMIC),
        ("Whole-body cryotherapies", SYSTEMIC),
        ("Cryotherapies to both knees", LOCAL_COLD),
        ("Cryosurgical treatment of the knee", LOCAL_COLD),
        ("Cryomassaging of the scalp", LOCAL_COLD),
        ("Cold compresses to the ankle", LOCAL_COLD),
        ("cold packs, left shoulder", LOCAL_COLD),
    ],
)
def test_text_only_orders_are_recognised_by_word_prefix(terminology: Terminology, text: str, modality: str) -> None:
    order = _order({"text": text})
    assert detect(order, terminology) == "text"
    assert classify(order, terminology, HEURISTIC) == modality


@pytest.mark.parametrize(
    "text",
    [
        "Cryoprecipitate transfusion",
        "Hot pack to the neck",
        "Cold agglutinin titre",
        "Cryo",
        "Ice cream",
        "Hydrotherapy",
    ],
)
def test_text_that_is_not_a_cryotherapy_order(terminology: Terminology, text: str) -> None:
    assert detect(_order({"text": text}), terminology) is None


def test_liquid_nitrogen_text_with_a_lesion_site_is_destructive(terminology: Terminology) -> None:
    order = _order({"text": "Cryosurgery, liquid nitrogen"}, bodySite=HAND)
    assert detect(order, terminology) == "text"
    assert classify(order, terminology, HEURISTIC) == LOCAL_DESTRUCTIVE


@pytest.mark.parametrize(
    ("kwargs", "recognised"),
    [
        ({"text": "Ice pack to right knee"}, True),
        ({"text": "Cold pack, 15 min"}, True),
        ({"text": "Icing after exercise"}, True),
        ({"note": [{"text": "cold pack, not heat"}]}, True),
        ({"orderDetail": [{"text": "cold"}]}, True),
        ({"text": "Hot pack to lower back"}, False),
        ({"text": "Heat therapy, moist heat pack"}, False),
        ({"text": "Hot or cold packs"}, False),  # the CPT descriptor copied into code.text
        ({"text": DESCRIPTOR}, False),
        ({"text": "Hot/cold pack"}, False),
        ({}, False),  # only the CPT display says "cold"
        ({"display": "HOT OR COLD PACKS THERAPY"}, False),
    ],
)
def test_cpt_97010_is_cold_only_by_the_orders_own_words(
    terminology: Terminology, kwargs: dict[str, Any], recognised: bool
) -> None:
    kwargs = dict(kwargs)
    display = kwargs.pop("display", DESCRIPTOR)
    order = _cpt97010(kwargs.pop("text", None), display, **kwargs)
    how = detect(order, terminology)
    assert (how is not None) == recognised, how
    if recognised:
        assert how is not None and how.startswith("CPT 97010")
        assert classify(order, terminology, HEURISTIC) == LOCAL_COLD


def test_cpt_97010_beside_a_cold_therapy_snomed_code_is_cold(terminology: Terminology) -> None:
    order = _order(
        {
            "coding": [
                {"system": CPT, "code": "97010", "display": DESCRIPTOR},
                {"system": SCT, "code": "182660006", "display": "Cold therapy"},
            ]
        }
    )
    assert detect(order, terminology) is not None
    assert classify(order, terminology, HEURISTIC) == LOCAL_COLD


def test_an_unreadable_hot_pack_draft_does_not_look_like_cryotherapy(terminology: Terminology) -> None:
    raw = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": 7,
        "code": {"coding": [{"system": CPT, "code": "97010", "display": DESCRIPTOR}], "text": "Hot pack"},
    }
    assert not looks_like_cryotherapy(raw, terminology)
    raw["code"]["text"] = "Ice pack"
    assert looks_like_cryotherapy(raw, terminology)


def test_the_systemic_heuristic_reads_its_thresholds_from_the_parameters(terminology: Terminology) -> None:
    """§2.2 rule 4 is policy in parameters.yaml: -120 °C for 3 minutes, no site, is whole-body
    cryotherapy by default, and not once a site sets the threshold at -150 °C."""
    order = _order(
        {"text": "Cryotherapy"},
        extension=[
            {"url": TEMPERATURE_URL, "valueQuantity": {"value": -120, "code": "Cel"}},
            {"url": DURATION_URL, "valueQuantity": {"value": 3, "code": "min"}},
        ],
    )
    assert SystemicHeuristic(max_temp_c=-100, min_seconds=60) == HEURISTIC
    assert classify(order, terminology, HEURISTIC) == SYSTEMIC
    colder = SystemicHeuristic.from_parameters({"systemic_max_temp_c": -150, "systemic_min_application_s": 60})
    assert classify(order, terminology, colder) == LOCAL_COLD
    longer = SystemicHeuristic.from_parameters({"systemic_max_temp_c": -100, "systemic_min_application_s": 240})
    assert classify(order, terminology, longer) == LOCAL_COLD


def _orders_and_procedures() -> list[dict[str, Any]]:
    """Every ServiceRequest and Procedure of the request fixtures and Synthea bundles."""
    import json

    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("resourceType") in ("ServiceRequest", "Procedure"):
                found.append(value)
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    for path in sorted((RULES_DIR.parent / "fhir_fixtures").rglob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return found


def test_detection_reads_only_what_its_key_holds() -> None:
    """``detection_key`` (what the fact step remembers detection by) holds all ``detect``
    reads: keeping only those elements changes no answer."""
    terminology = Terminology.load(RULES_DIR / "valuesets")
    kept = ("resourceType", "id", "status", "code", "orderDetail", "note", "intent", "subject")
    checked = 0
    for raw in _orders_and_procedures():
        whole, _ = parse_resource(raw)
        bare, _ = parse_resource({k: v for k, v in raw.items() if k in kept})
        if whole is None or bare is None:
            continue
        assert detection_key(whole) == detection_key(bare)
        for any_status in (False, True):
            assert detect(whole, terminology, any_status=any_status) == detect(bare, terminology, any_status=any_status)
        checked += 1
    assert checked > 50
