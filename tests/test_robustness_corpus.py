"""The robustness corpus (tests/robustness_corpus.py) through the whole pipeline: for every
record variant real systems send, the evidence is read (its rule fires) or the resource is
named in MD-INCOMPLETE and in the decision's data gaps; nothing vanishes without a trace."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from cds_hooks.devtools.cases import DEFAULT_NOW, case_request
from cds_hooks.hooks import parse_hook_request
from cds_hooks.record import build_record
from cds_hooks.service import SERVICES

from .conftest import make_pipeline
from .robustness_corpus import Variant, variants

CORPUS = variants()
NOW = datetime.fromisoformat(DEFAULT_NOW)


def _run(variant: Variant, rulebook: Any, terminology: Any, evaluator: Any) -> tuple[Any, dict[str, Any]]:
    body = case_request({"order": variant.order, "resources": [dict(r) for r in variant.resources]})
    pipeline = make_pipeline(rulebook, terminology, evaluator, NOW)
    outcome = pipeline.run(SERVICES["cryotherapy-order-select"], parse_hook_request(body, "order-select"))
    return outcome, body


def _incomplete_detail(outcome: Any) -> str:
    return "\n".join(c["detail"] for c in outcome.body["cards"] if c["source"]["topic"]["code"] == "MD-INCOMPLETE")


def test_the_corpus_covers_what_the_issue_lists() -> None:
    names = {v.name for v in CORPUS}
    for needle in (
        "bp-date-valid-2026",
        "bp-date-lenient-2026-11-10T10:00:00",
        "bp-date-unreadable",
        "condition-clinical-resolved",
        "condition-verification-refuted",
        "observation-status-cancelled",
        "medication-request-stopped",
        "medication-statement-not-taken",
        "icd-raynaud-dotless",
        "text-only",
        "methotrexate-atc-L01BA01",
        "methotrexate-contained",
        "methotrexate-referenced-in-prefetch",
        "methotrexate-reference-display-only",
        "hb-component-of-cbc",
        "bp-has-member",
        "hb-g-per-l",
        "hb-mmol-per-l",
        "order-temperature-in-degF",
        "order-duration-in-min",
        "hr-per-second",
    ):
        assert any(needle in name for name in names), needle
    assert len(names) == len(CORPUS), "variant names must be unique"


@pytest.mark.parametrize("variant", CORPUS, ids=[v.name for v in CORPUS])
def test_each_variant_is_read_or_named(variant: Variant, rulebook, terminology, plain_evaluator) -> None:
    outcome, body = _run(variant, rulebook, terminology, plain_evaluator)
    fired = {f.rule_id for f in outcome.decision.fired}
    assert outcome.decision.orders, "the order must be recognised"
    for rule in variant.fires:
        assert rule in fired, f"{rule} did not fire; fired {sorted(fired)}; gaps {outcome.decision.data_gaps}"
    for rule in variant.silent:
        assert rule not in fired, f"{rule} fired"
    detail = _incomplete_detail(outcome)
    for ref in variant.named:
        assert ref in detail, f"{ref} not named in MD-INCOMPLETE: {detail!r}"
        assert any(gap.startswith(ref) for gap in outcome.decision.data_gaps), outcome.decision.data_gaps
    if not variant.named:
        assert "skipped" not in detail, detail

    # Nothing vanishes: every resource sent is in the record or named as skipped.
    record = build_record(body["prefetch"])
    for resource in variant.resources:
        ref = f"{resource['resourceType']}/{resource['id']}"
        assert (ref in record.by_ref) != (ref in record.unread), ref
        assert (ref in record.unread) == (ref in variant.named), ref
        assert (ref in record.lenient) == (ref in variant.read_leniently), (ref, record.lenient.get(ref))


def test_facts_say_when_the_stop_date_was_not_recorded(rulebook, terminology, plain_evaluator) -> None:
    for variant in (v for v in CORPUS if v.facts):
        outcome, _body = _run(variant, rulebook, terminology, plain_evaluator)
        facts = [fact for f in outcome.decision.fired for fact in f.facts.values()]
        for kind, fields in variant.facts.items():
            assert any(fact["kind"] == kind and all(fact.get(k) == v for k, v in fields.items()) for fact in facts), (
                variant.name,
                facts,
            )


def test_a_record_of_only_invalid_but_readable_resources_never_gets_md_no_data(
    rulebook, terminology, plain_evaluator
) -> None:
    resources = [v.resources[0] for v in CORPUS if v.read_leniently and "condition-onset" in v.name]
    outcome, _body = _run(Variant("all-lenient", resources, order="wbc"), rulebook, terminology, plain_evaluator)
    fired = {f.rule_id for f in outcome.decision.fired}
    assert "MD-NO-DATA" not in fired and "CI-RAYNAUD" in fired


def test_a_record_of_only_unreadable_resources_names_them_and_never_gets_md_no_data(
    rulebook, terminology, plain_evaluator
) -> None:
    resources = [
        dict(r, id=f"{r['id']}-{i}")
        for i, v in enumerate(CORPUS)
        if v.named
        for r in v.resources
        if f"{r['resourceType']}/{r['id']}" in v.named
    ]
    outcome, _body = _run(Variant("all-unreadable", resources, order="wbc"), rulebook, terminology, plain_evaluator)
    fired = {f.rule_id for f in outcome.decision.fired}
    assert "MD-NO-DATA" not in fired
    detail = _incomplete_detail(outcome)
    for resource in resources:
        assert f"{resource['resourceType']}/{resource['id']}" in detail


def test_an_empty_record_still_gets_md_no_data(rulebook, terminology, plain_evaluator) -> None:
    outcome, _body = _run(Variant("empty", [], order="wbc"), rulebook, terminology, plain_evaluator)
    assert "MD-NO-DATA" in {f.rule_id for f in outcome.decision.fired}
