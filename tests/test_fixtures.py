"""The sandbox fixtures get the cards listed in fhir_fixtures/expected.yaml, with both evaluators."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from cds_hooks.devtools.conformance import validate
from cds_hooks.hooks import parse_hook_request
from cds_hooks.service import SERVICES

from .conftest import card_findings, make_pipeline

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
EXPECTED = yaml.safe_load((FIXTURES / "expected.yaml").read_text())
NOW = datetime.fromisoformat("2026-11-21T12:00:00+00:00")


def test_every_fixture_has_an_expectation() -> None:
    names = sorted(p.stem for p in (FIXTURES / "requests").glob("*.json"))
    assert len(names) >= 8
    assert names == sorted(EXPECTED)


@pytest.mark.parametrize("evaluator_name", ["durable", "plain"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gets_its_expected_cards(name, evaluator_name, rulebook, terminology, request) -> None:
    body = json.loads((FIXTURES / "requests" / f"{name}.json").read_text())
    pipeline = make_pipeline(rulebook, terminology, request.getfixturevalue(f"{evaluator_name}_evaluator"), NOW)
    service = SERVICES["cryotherapy-order-sign" if body["hook"] == "order-sign" else "cryotherapy-order-select"]
    response = pipeline.run(service, parse_hook_request(body, body["hook"])).body
    assert validate("response", response) == []
    assert sorted(card_findings(response["cards"])) == sorted(tuple(item) for item in EXPECTED[name])
