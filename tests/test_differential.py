"""durable-rules against the plain evaluator on randomised patients: 0 mismatches allowed.

The engine has silent wrong-result bugs (design note §4), so every rule in rules/ is run
by both evaluators over thousands of random fact sets, built from the fact schema with
values clustered around every constant the rules compare against (the boundaries are
where evaluators disagree), in shuffled order.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from cds_hooks.evaluator import engine_ready
from cds_hooks.factschema import (
    BOOL,
    EXAM_TESTS,
    FACT_SCHEMA,
    LAB_TESTS,
    NUM,
    PREGNANCY_POLARITIES,
    SITE_MATCHES,
)
from cds_hooks.rulebook import Rulebook, field_tests

PATIENTS = 2500
STRING_VALUES = {
    "modality": ["local-destructive", "local-cold", "systemic"],
    "local_code": ["whole-body-cryotherapy", "partial-body-cryotherapy", "cryomassage", "cryopeeling"],
    "gender": ["male", "female", "other", "unknown"],
    "test": list(dict.fromkeys(LAB_TESTS + EXAM_TESTS)),
    "site_match": list(SITE_MATCHES),
    "polarity": [*list(PREGNANCY_POLARITIES), "unknown"],
}


def _constants(rulebook: Rulebook) -> dict[str, set[float]]:
    """Every number each field is compared with, anywhere in the rules."""
    found: dict[str, set[float]] = defaultdict(set)
    for variant in rulebook.variants.values():
        for fname, _op, operand in field_tests(variant.definition):
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                found[fname].add(float(operand))
    return found


def _number(rng: random.Random, anchors: set[float]) -> float:
    if anchors and rng.random() < 0.85:
        anchor = rng.choice(sorted(anchors))
        return round(anchor + rng.choice([-1, -0.5, -0.01, 0, 0, 0.01, 0.5, 1, 10, -10]), 4)
    return round(rng.uniform(-200, 400), 2)


def _fact(rng: random.Random, kind: str, anchors: dict[str, set[float]], index: int) -> dict[str, Any]:
    fact: dict[str, Any] = {"kind": kind, "id": f"f{index}"}
    for fname, ftype in FACT_SCHEMA[kind].items():
        if rng.random() < 0.35:
            continue  # absent fields must behave the same in both evaluators
        if ftype == BOOL:
            fact[fname] = rng.random() < 0.5
        elif ftype == NUM:
            fact[fname] = _number(rng, anchors.get(fname, set()))
        else:
            fact[fname] = rng.choice(STRING_VALUES.get(fname, ["x"]))
    return fact


def random_patient(rng: random.Random, anchors: dict[str, set[float]]) -> list[dict[str, Any]]:
    facts = [_fact(rng, "order", anchors, 0), _fact(rng, "patient", anchors, 1), _fact(rng, "record", anchors, 2)]
    kinds = [k for k in FACT_SCHEMA if k not in ("order", "patient", "record")]
    for i in range(rng.randint(0, 30)):
        facts.append(_fact(rng, rng.choice(kinds), anchors, i + 3))
    rng.shuffle(facts)
    return facts


def test_durable_rules_and_plain_evaluator_agree_on_random_patients(
    rulebook, durable_evaluator, plain_evaluator
) -> None:
    rng = random.Random(20261121)
    anchors = _constants(rulebook)
    replaced = getattr(durable_evaluator, "sessions_replaced", 0)  # the engine's kept session
    mismatches, fired = [], Counter()
    for index in range(PATIENTS):
        facts = random_patient(rng, anchors)
        # Half the patients go in as the pipeline passes them: converted once, ``ready=True``.
        ready = index % 2 == 1
        durable_hits = sorted(durable_evaluator.evaluate(engine_ready(facts) if ready else facts, ready=ready))
        plain_hits = sorted(plain_evaluator.evaluate(facts))
        if durable_hits != plain_hits:
            mismatches.append((facts, durable_hits, plain_hits))
        fired.update(hit.rule_id for hit in plain_hits)
    assert not mismatches, f"{len(mismatches)} of {PATIENTS} patients differ; first: {mismatches[0]}"
    # Every patient's facts were taken out again after its evaluation: no session was replaced.
    assert getattr(durable_evaluator, "sessions_replaced", 0) == replaced
    never = sorted(r.id for r in rulebook.rules if fired[r.id] == 0)
    assert not never, f"the random patients never made these rules fire, so they were not compared: {never}"
