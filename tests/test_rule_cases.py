"""Every rule case in rules/*/cases runs through the whole pipeline, with both evaluators.

fires-*.yaml: the rule's finding (its group's for grouped rules) is on a card, with the
expected indicator, in the cards' ``org.cryo-cds.findings`` extension. silent-*.yaml: it is absent.
A case may also pin the exact card list.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cds_hooks.devtools.cases import DEFAULT_NOW, case_request, load_case
from cds_hooks.devtools.conformance import validate
from cds_hooks.hooks import parse_hook_request
from cds_hooks.service import SERVICES

from .conftest import RULES_DIR, card_findings, make_pipeline

CASES = sorted(RULES_DIR.glob("*/cases/*.yaml"))


def _card_code(rulebook, rule_id: str) -> str:
    return str(rulebook.card_code(rulebook.by_id[rule_id]))


@pytest.mark.parametrize("evaluator_name", ["durable", "plain"])
@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.parent.name}/{p.stem}" for p in CASES])
def test_rule_case_gives_the_expected_cards(path: Path, evaluator_name, rulebook, terminology, request) -> None:
    case = load_case(path)
    rule_id = path.parent.parent.name
    evaluator = request.getfixturevalue(f"{evaluator_name}_evaluator")
    now = datetime.fromisoformat(str(case.get("now", DEFAULT_NOW)))
    pipeline = make_pipeline(rulebook, terminology, evaluator, now)
    hook = case.get("hook", "order-select")
    service = SERVICES["cryotherapy-order-select" if hook == "order-select" else "cryotherapy-order-sign"]
    body = case_request(case, hook)
    outcome = pipeline.run(service, parse_hook_request(body, hook))
    response = outcome.body
    if not case.get("not_cryotherapy"):  # a silent case must be silent for the right reason
        assert outcome.decision.orders, f"{path}: the order was not recognised as cryotherapy"
    assert validate("response", response) == []
    got = card_findings(response["cards"])
    codes = {code for code, _ in got}
    if "cards" in case:
        assert sorted(got) == sorted((c["rule"], c["indicator"]) for c in case["cards"]), case.get("description")
    if path.stem.startswith("fires"):
        expected = case.get("expect") or []
        assert expected, f"{path}: a firing case must list what it expects"
        for item in expected:
            assert (item["rule"], item["indicator"]) in got, f"{case.get('description')}: got {sorted(got)}"
    else:
        assert path.stem.startswith("silent"), f"{path}: case files are fires-*.yaml or silent-*.yaml"
        absent = case.get("expect_absent") or [_card_code(rulebook, rule_id)]
        for code in absent:
            assert code not in codes, f"{case.get('description')}: got {sorted(got)}"
