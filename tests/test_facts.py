"""The facts step emits only what the rules' vocabulary declares, typed as declared, and
JSON-serialisable (the decision log stores facts per decision): checked on every rule case,
every fixture request and a whole Synthea patient."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from cds_hooks.devtools.cases import DEFAULT_NOW, bundle_request, case_request, load_case
from cds_hooks.facts import build_facts
from cds_hooks.factschema import BOOL, DISPLAY_FIELDS, FACT_SCHEMA, NUM, STR
from cds_hooks.hooks import parse_hook_request
from cds_hooks.orders import SystemicHeuristic, find_cryo_orders
from cds_hooks.record import build_record, parse_draft_orders

from .conftest import ROOT, RULES_DIR

TYPES = {BOOL: (bool,), NUM: (int, float), STR: (str,)}


def _bodies() -> list[tuple[str, dict[str, Any], datetime]]:
    now = datetime.fromisoformat(DEFAULT_NOW)
    bodies = []
    for path in sorted(RULES_DIR.glob("*/cases/*.yaml")):
        case = load_case(path)
        when = datetime.fromisoformat(str(case.get("now", DEFAULT_NOW)))
        bodies.append(
            (f"{path.parent.parent.name}/{path.stem}", case_request(case, case.get("hook", "order-select")), when)
        )
    for path in sorted((ROOT / "fhir_fixtures" / "requests").glob("*.json")):
        bodies.append((path.name, json.loads(path.read_text(encoding="utf-8")), now))
    synthea = ROOT / "fhir_fixtures" / "external" / "Parker_Casper_6d0c6969-6843-47e1-9921-d9bf11b1df31.json"
    bodies.append((synthea.name, bundle_request(json.loads(synthea.read_text(encoding="utf-8")), "wbc"), now))
    return bodies


def _facts_of(body: dict[str, Any], when: datetime, rulebook: Any, terminology: Any) -> list[Any]:
    hook = body.get("hook", "order-select")
    request = parse_hook_request(body, hook)
    drafts, _ = parse_draft_orders(request.draft_orders)
    systemic = SystemicHeuristic.from_parameters(rulebook.parameters)
    orders = find_cryo_orders(drafts, terminology, request.selections, systemic=systemic)
    record = build_record(request.prefetch)
    return [f for o in orders for f in build_facts(o, record, drafts, terminology, when, rulebook.parameters)]


def test_every_fact_is_declared_typed_and_json_serialisable(rulebook, terminology) -> None:
    problems: list[str] = []
    kinds_seen: set[str] = set()
    for name, body, when in _bodies():
        facts = _facts_of(body, when, rulebook, terminology)
        json.dumps(facts, allow_nan=False)  # raises on anything the log could not store
        ids = [f["id"] for f in facts]
        if len(ids) != len(set(ids)):
            problems.append(f"{name}: duplicate fact ids")
        for fact in facts:
            kind = fact["kind"]
            kinds_seen.add(kind)
            declared = {**DISPLAY_FIELDS, **FACT_SCHEMA.get(kind, {})}
            for field, value in fact.items():
                expected = declared.get(field)
                if expected is None:
                    problems.append(f"{name}: {kind}.{field} is not declared")
                elif (
                    value is None
                    or not isinstance(value, TYPES[expected])
                    or (expected == NUM and isinstance(value, bool))
                ):
                    problems.append(f"{name}: {kind}.{field} = {value!r} is not a {expected}")
    assert problems == []
    assert kinds_seen == set(FACT_SCHEMA), "some fact kinds were never built, so never checked"


@pytest.mark.parametrize("name", ["01-pregnant-whole-body-order-select.json"])
def test_the_facts_of_a_fixture_are_the_same_when_built_twice(name: str, rulebook, terminology) -> None:
    """The per-call indexes (value-set memberships, cryotherapy detection) change no answer."""
    body = json.loads((ROOT / "fhir_fixtures" / "requests" / name).read_text(encoding="utf-8"))
    now = datetime.fromisoformat(DEFAULT_NOW)
    assert _facts_of(body, now, rulebook, terminology) == _facts_of(body, now, rulebook, terminology)
    assert _facts_of(body, now, rulebook, terminology) != []


def test_a_remembered_drug_classification_is_told_apart_by_text_and_by_display(terminology) -> None:
    """Drug classes are remembered per drug; two drugs that share a code but not their words
    (or the reverse) must each keep their own classes, in any order of asking."""
    from types import SimpleNamespace

    from cds_hooks.facts.medications import _drug_classes

    def drug(text: str | None, display: str | None = None) -> list[Any]:
        coding = [SimpleNamespace(system="urn:example:local", code="LOCAL-1", display=display)]
        return [SimpleNamespace(text=text, coding=coding)]

    warfarin, paracetamol = drug("warfarin 5 mg tablet"), drug("paracetamol 500 mg tablet")
    by_display = drug(None, display="Warfarin sodium 5 mg oral tablet")
    first = [_drug_classes(d, terminology) for d in (warfarin, paracetamol, by_display)]
    again = [_drug_classes(d, terminology) for d in (by_display, paracetamol, warfarin)][::-1]
    assert first == again
    assert first[0][0] == {"med_anticoag": "warfarin"}
    assert first[1] == ({}, None)
    assert first[2][0] == {"med_anticoag": "warfarin"}
