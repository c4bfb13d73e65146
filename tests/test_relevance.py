"""Parsing only what a rule can read (``cds_hooks.relevance``) changes cost, never cards.

Every Synthea patient of the shared data set (and every robustness-corpus variant) goes
through the pipeline twice: with the filter (as the service runs) and without it (every
resource validated). Cards (uuids aside), data gaps and the fired rules' evidence must be
identical, and on Synthea the filter must actually have left resources out, so the
comparison cannot pass by the filter doing nothing.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_hooks import relevance
from cds_hooks.devtools.cases import DEFAULT_NOW, bundle_request, case_request
from cds_hooks.devtools.coverage import record_date
from cds_hooks.hooks import ORDER_SELECT, parse_hook_request
from cds_hooks.record import build_record
from cds_hooks.relevance import RuleReach
from cds_hooks.service import SERVICES, Outcome, Pipeline

from .conftest import make_pipeline
from .robustness_corpus import Variant, variants

SHARED_SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "external" / "fhir-data" / "synthea-smart-r4"
REPO_SYNTHEA = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "external"
SERVICE = SERVICES["cryotherapy-order-select"]
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def _bundles() -> list[Any]:
    folder = SHARED_SYNTHEA if SHARED_SYNTHEA.is_dir() else REPO_SYNTHEA
    return [pytest.param(path, id=path.stem.split("_")[0]) for path in sorted(folder.glob("*.json"))]


def _without_uuids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


def _seen(outcome: Outcome) -> dict[str, Any]:
    """What a clinician and the audit log see of one call, minus the random uuids."""
    return {
        "status": outcome.status,
        "cards": _without_uuids(outcome.body.get("cards")),
        "data_gaps": sorted(outcome.decision.data_gaps),
        "fired": sorted(
            (hit.rule_id, hit.order_ref, json.dumps(hit.evidence, sort_keys=True)) for hit in outcome.decision.fired
        ),
    }


def _both_ways(pipeline: Pipeline, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    unfiltered = copy.copy(pipeline)
    unfiltered.reach = None
    filtered_outcome = pipeline.run(SERVICE, parse_hook_request(copy.deepcopy(body), ORDER_SELECT))
    full_outcome = unfiltered.run(SERVICE, parse_hook_request(copy.deepcopy(body), ORDER_SELECT))
    return _seen(filtered_outcome), _seen(full_outcome)


@pytest.mark.parametrize("path", _bundles())
def test_a_synthea_patient_gets_the_same_cards_with_and_without_the_filter(
    path: Path, rulebook, terminology, plain_evaluator
) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    pipeline = make_pipeline(rulebook, terminology, plain_evaluator, record_date(bundle))
    for order in ("wbc", "ln2"):
        body = bundle_request(bundle, order, ORDER_SELECT)
        filtered, full = _both_ways(pipeline, body)
        assert filtered == full, order
    record = build_record(bundle_request(bundle, "wbc", ORDER_SELECT)["prefetch"], None, pipeline.reach)
    assert record.counted.get("Observation", 0) > 0, "the filter left nothing out: the comparison proves nothing"


@pytest.mark.parametrize("variant", variants(), ids=lambda v: v.name)
def test_a_robustness_variant_gets_the_same_cards_with_and_without_the_filter(
    variant: Variant, rulebook, terminology, plain_evaluator
) -> None:
    pipeline = make_pipeline(rulebook, terminology, plain_evaluator, datetime.fromisoformat(DEFAULT_NOW))
    body = case_request({"order": variant.order, "resources": [dict(r) for r in variant.resources]})
    filtered, full = _both_ways(pipeline, body)
    assert filtered == full


# -- the decision itself, resource by resource ---------------------------------------------


def _obs(code: str, system: str = LOINC, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o-{code}",
        "status": "final",
        "effectiveDateTime": "2026-10-01",
        "code": {"coding": [{"system": system, "code": code}]},
    }
    resource.update(extra)
    return resource


@pytest.fixture(scope="module")
def reach(terminology) -> RuleReach:
    return RuleReach(terminology)


def test_an_observation_no_rule_reads_is_counted_not_modelled(reach: RuleReach) -> None:
    assert not reach.needs_model(_obs("72166-2"))  # tobacco smoking status
    assert not reach.needs_model(_obs("29463-7"))  # body weight


def test_observations_the_rules_read_are_modelled(reach: RuleReach) -> None:
    assert reach.needs_model(_obs("718-7"))  # haemoglobin
    assert reach.needs_model(_obs("8480-6"))  # systolic blood pressure
    panel_with_bp_component = _obs(
        "99999-9", component=[{"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}}]
    )  # a local panel code, a diastolic component
    assert reach.needs_model(panel_with_bp_component)
    assert reach.needs_model(_obs("99999-9", hasMember=[{"reference": "Observation/x"}]))
    assert reach.needs_model(_obs("R03.0", system=ICD))  # may be an order's reasonReference


def test_in_doubt_an_observation_is_modelled_so_an_unreadable_one_is_still_named(reach: RuleReach) -> None:
    undated = _obs("72166-2")
    del undated["effectiveDateTime"]
    assert reach.needs_model(undated)
    assert reach.needs_model(_obs("72166-2", status="done"))
    assert reach.needs_model(_obs("72166-2", effectiveDateTime="yesterday"))
    assert reach.needs_model({**_obs("72166-2"), "code": "72166-2"})
    assert reach.needs_model({**_obs("72166-2"), "code": {"coding": {"system": LOINC, "code": "72166-2"}}})
    assert reach.needs_model(_obs("72166-2", contained=[_obs("718-7")]))
    assert reach.needs_model("not a resource")


def test_types_no_rule_reads_are_counted_unless_their_code_could_be_an_order_reason(reach: RuleReach) -> None:
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished"}
    assert not reach.needs_model(encounter)
    report = {"resourceType": "DiagnosticReport", "id": "d1", "code": {"coding": [{"system": ICD, "code": "L57.0"}]}}
    assert reach.needs_model(report)
    for kind in ("Condition", "Procedure", "MedicationRequest", "Patient", "Device", "AllergyIntolerance"):
        assert reach.needs_model({"resourceType": kind, "id": "x"})


def test_counted_resources_still_count_as_clinical_history(reach: RuleReach) -> None:
    answer = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": _obs("72166-2")}]}
    record = build_record({"observations": answer}, None, reach)
    assert record.of("Observation") == []
    assert record.counted == {"Observation": 1}
    assert record.holds_history()  # MD-NO-DATA stays silent: the record is not empty
    assert record.unread == {}


@pytest.mark.parametrize(
    "value",
    [
        "2019-03-01T10:20:30+00:00",
        "2019-03-01T10:20:30.123Z",
        "2019-03-01",
        "2019",
        "2019-3-1",
        "2019-03-01 10:20:30",
        "2019-03-01T10:20:30+0000",
        "٢٠١٩-٠٣-٠١",  # Arabic-Indic digits: \d matches them too
        "2019-03-01T10:20:30\ud800",  # a lone surrogate (JSON allows it)
        "2019-03-01T10:20:30." + "1" * 40,  # longer than any remembered shape
        "",
        "yesterday",
    ],
)
def test_a_date_is_plain_by_its_shape_exactly_when_the_pattern_says_so(value: str) -> None:
    for _ in range(2):  # the second time from the remembered shape
        assert relevance._plain_date(value) is (relevance._PLAIN_DATE.fullmatch(value) is not None)
