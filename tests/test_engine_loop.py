"""The durable-rules evaluator's own loop over fired rules (cds_hooks/engine.py): every fired
rule is noted with the facts it bound, the engine's own rules are not, a session is deleted
after each evaluation, and a match it cannot read is logged without any fact value."""

from __future__ import annotations

import logging

from cds_hooks.engine import DurableEvaluator, _note
from cds_hooks.evaluator import Hit, PlainEvaluator

RULES = {
    "HIGH-SBP#0": {"all": [{"m": {"$and": [{"kind": "bp"}, {"$gte": {"sbp": 160}}]}}]},
    "PACER-SYSTEMIC#0": {
        "all": [
            {"o": {"$and": [{"kind": "order"}, {"modality": "systemic"}]}},
            {"d": {"$and": [{"kind": "device"}, {"pacemaker": True}]}},
        ]
    },
}


def test_every_fired_rule_is_noted_with_the_facts_it_bound() -> None:
    durable, plain = DurableEvaluator(RULES), PlainEvaluator(RULES)
    facts = [
        {"kind": "order", "id": "f1", "modality": "systemic"},
        {"kind": "device", "id": "f2", "pacemaker": True},
        {"kind": "bp", "id": "f3", "sbp": 171.0},
        {"kind": "bp", "id": "f4", "sbp": 150.0},
    ]
    hits = sorted(durable.evaluate(facts))
    assert hits == [Hit("HIGH-SBP#0", (("m", "f3"),)), Hit("PACER-SYSTEMIC#0", (("o", "f1"), ("d", "f2")))]
    assert hits == sorted(plain.evaluate(facts))
    assert durable.evaluate([{"kind": "bp", "id": "f9", "sbp": 120.0}]) == []  # only the engine's own rules fired
    for _ in range(200):  # one session per evaluation, deleted after it: the same answer every time
        assert sorted(durable.evaluate(facts)) == hits


def test_a_match_that_cannot_be_read_is_logged_without_fact_values(caplog) -> None:
    hits: list[Hit] = []
    with caplog.at_level(logging.ERROR, logger="cds_hooks.engine"):
        _note({"HIGH-SBP#0": {"m": {"kind": "bp", "label": "Jane Doe's reading"}}}, hits)  # no "id"
    assert hits == []
    assert "HIGH-SBP#0" in caplog.text and "KeyError" in caplog.text
    assert "Jane" not in caplog.text
