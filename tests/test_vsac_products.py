"""RxNorm products matched only through a stored VSAC expansion (catalogue §1 medication matching (2)).

The codes live in rules/valuesets/vsac/<OID>.json and join a MED-* set through its
``vsac_expansions`` key; tests/test_valuesets_data.py checks the files, this file checks that the
loader uses them and that the cards they raise name the drug.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.codeableconcept import CodeableConcept

from cds_hooks.devtools.cases import DEFAULT_NOW, case_request
from cds_hooks.facts.medications import drug_class_match
from cds_hooks.hooks import parse_hook_request
from cds_hooks.service import SERVICES
from cds_hooks.terminology import RXNORM, Terminology, ValueSetError

from .conftest import cards_by_rule, make_pipeline

SERVICE = SERVICES["cryotherapy-order-select"]


def _med(code: str, display: str | None = None, status: str = "active", **extra: Any) -> dict[str, Any]:
    coding = {"system": RXNORM, "code": code}
    if display:
        coding["display"] = display
    return {
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [coding]},
        **extra,
    }


def _cards(rulebook, terminology, evaluator, order: str, *resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pipeline = make_pipeline(rulebook, terminology, evaluator, datetime.fromisoformat(DEFAULT_NOW))
    body = case_request({"order": order, "resources": list(resources)})
    outcome = pipeline.run(SERVICE, parse_hook_request(body, "order-select"))
    return cards_by_rule(outcome.body["cards"])


# --------------------------------------------------------------------------- the loader


def test_expansion_codes_join_the_class_with_their_vsac_display(terminology: Terminology) -> None:
    chemo = terminology["MED-CHEMO"]
    assert chemo.has_code(RXNORM, "1860480")  # docetaxel, only in 1151.60
    assert chemo.display_for(RXNORM, "1860480") == "1 ML docetaxel 20 MG/ML Injection"
    assert chemo.has_code(RXNORM, "6851")  # the catalogue's own codes stay
    # a display the catalogue gives wins over the expansion's
    vaso = terminology["MED-VASO"]
    assert vaso.display_for(RXNORM, "866436") == "24 HR metoprolol succinate 50 MG ER Oral Tablet"
    assert vaso.has_code(RXNORM, "387013") and vaso.has_code(RXNORM, "197417")  # 1174 and 1248.170
    # expansion products add no ingredient names (word matching stays on the catalogue's ingredients)
    assert "docetaxel" not in chemo.ingredient_names


def test_vsac_exclude_removes_the_code_from_the_class(terminology: Terminology) -> None:
    steroids = terminology["MED-IMMSUP.glucocorticoid"]
    assert not steroids.has_code(RXNORM, "1085728")  # triamcinolone oral paste
    assert steroids.has_code(RXNORM, "197969")  # methylprednisolone 2 MG Oral Tablet


def _folder(tmp_path: Path, valueset: dict[str, Any], expansion: dict[str, Any] | None) -> Path:
    (tmp_path / "meds.yaml").write_text(json.dumps({"valuesets": [valueset]}), encoding="utf-8")
    if expansion is not None:
        (tmp_path / "vsac").mkdir()
        (tmp_path / "vsac" / "1.2.3.json").write_text(json.dumps(expansion), encoding="utf-8")
    return tmp_path


SET = {"id": "MED-X", "title": "x", "source": "VSAC 1.2.3", "vsac_expansions": ["1.2.3"]}
EXPANSION = {"oid": "1.2.3", "system": RXNORM, "codes": [{"code": "111", "display": "drugx 5 MG Oral Tablet"}]}


def test_a_stored_expansion_is_loaded_from_the_vsac_folder(tmp_path: Path) -> None:
    vs = Terminology.load(_folder(tmp_path, SET, EXPANSION))["MED-X"]
    assert vs.has_code(RXNORM, "111") and vs.display_for(RXNORM, "111") == "drugx 5 MG Oral Tablet"


@pytest.mark.parametrize(
    ("valueset", "expansion", "message"),
    [
        (SET, None, "no stored VSAC expansion"),
        (SET, {**EXPANSION, "system": "http://snomed.info/sct"}, "system must be"),
        (SET, {**EXPANSION, "oid": "9.9.9"}, "'oid' must be"),
        (SET, {**EXPANSION, "codes": [{"code": 111, "display": "x"}]}, "non-empty string"),
        ({**SET, "vsac_exclude": ["222"]}, EXPANSION, "in none of its expansions"),
        (
            {**SET, "vsac_expansions": [], "rxnorm": {"1": {"display": "x"}}, "vsac_exclude": ["111"]},
            EXPANSION,
            "without 'vsac_expansions'",
        ),
    ],
)
def test_a_broken_expansion_reference_stops_the_load(tmp_path: Path, valueset, expansion, message) -> None:
    with pytest.raises(ValueSetError, match=message):
        Terminology.load(_folder(tmp_path, valueset, expansion))


# --------------------------------------------------------------------------- the facts and cards


def test_a_product_only_in_the_expansion_is_named_by_its_display(terminology: Terminology) -> None:
    synthea = CodeableConcept.model_validate(
        {"coding": [{"system": RXNORM, "code": "1860480", "display": "1 ML DOCEtaxel 20 MG/ML Injection"}]}
    )
    assert drug_class_match([synthea], terminology["MED-CHEMO"]) == "1 ML docetaxel 20 MG/ML Injection"
    combo = CodeableConcept.model_validate(
        {
            "coding": [
                {
                    "system": RXNORM,
                    "code": "197885",
                    "display": "hydrochlorothiazide 12.5 MG / lisinopril 10 MG Oral Tablet",
                }
            ]
        }
    )
    assert drug_class_match([combo], terminology["MED-VASO"]) == "hydrochlorothiazide"  # the ingredient word
    bare = CodeableConcept.model_validate({"coding": [{"system": RXNORM, "code": "387013"}]})
    assert drug_class_match([bare], terminology["MED-VASO"]) == "nebivolol 5 MG Oral Tablet"


def test_the_vasoactive_card_names_a_product_matched_through_the_expansion(
    rulebook, terminology, plain_evaluator
) -> None:
    cards = _cards(rulebook, terminology, plain_evaluator, "wbc", _med("387013"))  # code only, no display
    assert cards["DI-VASO"]["indicator"] == "warning"
    assert "blood-pressure drug (nebivolol 5 MG Oral Tablet)" in cards["DI-VASO"]["summary"]


def test_docetaxel_as_synthea_writes_it_gives_the_immune_card(rulebook, terminology, durable_evaluator) -> None:
    cards = _cards(
        rulebook,
        terminology,
        durable_evaluator,
        "ln2",
        _med("1860480", "1 ML DOCEtaxel 20 MG/ML Injection", authoredOn="2005-03-18"),
    )
    assert cards["GRP-IMMUNE"]["indicator"] == "warning"
    assert "— 1 ML docetaxel 20 MG/ML Injection, currently prescribed." in cards["GRP-IMMUNE"]["detail"]
    assert "RxNorm 1860480" in cards["GRP-IMMUNE"]["detail"].split("<details>")[1]


def test_prednisone_from_the_immunosuppressant_expansion_still_counts_as_a_glucocorticoid(
    rulebook, terminology, plain_evaluator
) -> None:
    # 312617 prednisone 5 MG Oral Tablet is in both 1151.32 (MED-IMMSUP) and 1266 (glucocorticoids)
    current = _cards(rulebook, terminology, plain_evaluator, "wbc", _med("312617", "prednisone 5 MG Oral Tablet"))
    assert current["GRP-IMMUNE"]["indicator"] == "critical"
    # named as the glucocorticoid (ingredient word), not as the MED-IMMSUP product display
    assert "Prednisone, currently prescribed." in current["GRP-IMMUNE"]["detail"]

    def stopped_between(start: str, end: str) -> dict[str, dict[str, Any]]:
        prednisone = _med(
            "312617",
            "prednisone 5 MG Oral Tablet",
            status="stopped",
            authoredOn=start,
            dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"start": start, "end": end}}}}],
        )
        return _cards(rulebook, terminology, plain_evaluator, "wbc", prednisone)

    stopped = stopped_between("2026-11-01", "2026-11-16")
    assert "GRP-IMMUNE" in stopped  # catalogue 1.1: a glucocorticoid last taken <= 28 d counts
    long_stopped = stopped_between("2026-09-01", "2026-10-01")
    assert "GRP-IMMUNE" not in long_stopped  # stopped 51 days before: outside the 28-day window
