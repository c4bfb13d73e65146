"""One place for what the service asks for (cds_hooks/prefetch.py): the discovery templates,
the FHIR-server fallback queries and the Observation codes the facts step reads agree; the
FHIR sandbox answers every query; Medications referenced but not sent are fetched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from flask import request

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.cases import DEFAULT_NOW, case_request
from cds_hooks.devtools.fhir_server import create_fhir_app, load_resources
from cds_hooks.facts import FactContext
from cds_hooks.facts.observations import observation_facts
from cds_hooks.fhir_client import FhirFetcher
from cds_hooks.hooks import parse_hook_request
from cds_hooks.orders import SystemicHeuristic
from cds_hooks.prefetch import (
    OBSERVATION_SETS,
    PREFETCH_QUERIES,
    observation_codes,
    prefetch_templates,
)
from cds_hooks.record import build_record
from cds_hooks.rulebook import load_parameters
from cds_hooks.service import SERVICES
from cds_hooks.terminology import RXNORM

from .conftest import RULES_DIR, make_pipeline
from .support.loopback import LoopbackServer

NOW = datetime.fromisoformat(DEFAULT_NOW)
HEURISTIC = SystemicHeuristic.from_parameters(load_parameters(RULES_DIR))
PATIENT = "p1"
SYNTHEA = (
    Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests" / "02-pacemaker-whole-body-order-sign.json"
)


@pytest.fixture()
def sandbox(tmp_path: Path) -> Iterator[tuple[LoopbackServer, list[str]]]:
    """The FHIR sandbox over a small record of our own, remembering each request's path."""
    data = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": r}
            for r in [
                {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1980-01-01"},
                {
                    "resourceType": "Observation",
                    "id": "bp",
                    "status": "final",
                    "subject": {"reference": f"Patient/{PATIENT}"},
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "vital-signs",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "LOCAL-BP"}]},
                    "effectiveDateTime": "2026-11-10",
                    "component": [
                        {
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                            "valueQuantity": {"value": 190, "unit": "mm[Hg]"},
                        }
                    ],
                },
                {
                    "resourceType": "MedicationRequest",
                    "id": "mr",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": f"Patient/{PATIENT}"},
                    "authoredOn": "2026-11-01",
                    "medicationReference": {"reference": "Medication/mtx"},
                },
                {"resourceType": "Medication", "id": "mtx", "code": {"coding": [{"system": RXNORM, "code": "105585"}]}},
            ]
        ],
    }
    path = tmp_path / "record.json"
    path.write_text(json.dumps(data))
    seen: list[str] = []
    app = create_fhir_app(load_resources([path]), page_size=50)

    @app.before_request
    def remember() -> None:
        seen.append(unquote(request.full_path).rstrip("?"))

    server = LoopbackServer(app)
    yield server, seen
    server.stop()


def test_discovery_advertises_exactly_the_templates_the_fallback_runs(tmp_path, sandbox, terminology) -> None:
    server, seen = sandbox
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
    )
    client = create_app(config).test_client()
    advertised = client.get("/cds-services").get_json()["services"][0]["prefetch"]
    assert advertised == prefetch_templates(terminology)
    assert set(advertised) == set(PREFETCH_QUERIES)
    fetcher = FhirFetcher(server.url, PATIENT, advertised, access_token=None, budget_s=10, max_pages=5)
    for key, template in advertised.items():
        answer = fetcher.query(key)  # the sandbox is strict: an unknown parameter would be a 400
        assert answer is not None and answer.get("resourceType") != "OperationOutcome", key
        assert seen[-1] == "/" + template.replace("{{context.patientId}}", PATIENT), key


def test_observations_by_category_bring_panels_with_local_codes_and_their_medications(sandbox) -> None:
    server, _seen = sandbox
    templates = {k: t for k, (t, _types) in PREFETCH_QUERIES.items()}
    fetcher = FhirFetcher(server.url, PATIENT, templates, access_token=None, budget_s=10, max_pages=5)
    observations = fetcher.query("observations")
    assert [e["resource"]["id"] for e in observations["entry"]] == ["bp"]
    requests_ = fetcher.query("medicationRequests")
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in requests_["entry"]] == [
        ("mr", "match"),
        ("mtx", "include"),
    ]


def test_a_medication_referenced_but_not_sent_is_fetched_from_the_server(
    sandbox, rulebook, terminology, plain_evaluator
) -> None:
    server, seen = sandbox
    case = {
        "order": "ln2",
        "resources": [
            {
                "resourceType": "MedicationRequest",
                "id": "mr",
                "status": "active",
                "intent": "order",
                "authoredOn": "2026-11-01",
                "medicationReference": {"reference": "Medication/mtx"},
            }
        ],
    }
    body = case_request(case)
    templates = {k: t for k, (t, _types) in PREFETCH_QUERIES.items()}
    fetcher = FhirFetcher(server.url, PATIENT, templates, access_token=None, budget_s=10, max_pages=5)
    outcome = make_pipeline(rulebook, terminology, plain_evaluator, NOW).run(
        SERVICES["cryotherapy-order-select"], parse_hook_request(body, "order-select"), fetcher
    )
    assert {"DI-CHEMO", "DI-IMMSUP"} <= {f.rule_id for f in outcome.decision.fired}
    assert any(path.startswith("/MedicationRequest?") and "_include" in path for path in seen)
    without = build_record(body["prefetch"])  # no server: the drug stays unknown, and nothing fires for it
    assert without.resolve("Medication/mtx") is None


def _observation_with(system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "effectiveDateTime": "2026-11-20",
        "code": {"coding": [{"system": system, "code": code}]},
        "valueQuantity": {"value": 1},
        "interpretation": [{"coding": [{"code": "POS"}]}],
    }


def _answered(system: str, code: str) -> dict[str, Any]:
    obs = _observation_with(system, code)
    del obs["valueQuantity"]
    obs["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": "LA15173-0"}]}
    return obs


def test_every_observation_code_the_facts_step_reads_is_asked_for(terminology) -> None:
    """Offer every non-drug code of every value set as an Observation: each one the facts step
    turns into a fact must be in the prefetch code list, and each listed code must give a fact."""
    asked = set(observation_codes(terminology).split(","))
    panels = {f"{s}|{c}" for s, c in terminology["OBS-BP.panel"].exact}
    read = set()
    for vs in terminology.all():
        for system, code in vs.exact:
            if system == RXNORM:
                continue
            for raw in (_observation_with(system, code), _answered(system, code)):
                record = build_record({"observations": {"resourceType": "Bundle", "entry": [{"resource": raw}]}})
                ctx = FactContext(terminology, NOW, NOW, count(), HEURISTIC)
                if observation_facts(record, ctx):
                    read.add(f"{system}|{code}")
    assert read - asked == set(), "read by the facts step but not asked for in the prefetch"
    assert asked - read - panels == set(), "asked for but never read"
    assert set(OBSERVATION_SETS) >= {"OBS-HB.mass", "OBS-A1C", "CL-PREG.status-obs", "OBS-PREEXAM.ice-test"}
