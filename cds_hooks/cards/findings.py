"""Rule hits -> findings: what each rule (or rule group) found on each cryotherapy order,
with the highest severity of its hits, before any card exists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..evaluator import OrderEvaluation
from ..rulebook import SEVERITY_RANK, Rule, Rulebook, Variant


@dataclass
class Finding:
    """Everything one rule (or group) found on one order."""

    key: str  # rule id, or group id for grouped rules
    order_ref: str
    modality: str
    order_index: int
    rules: list[Rule]
    severity: str
    variant: Variant
    order: Mapping[str, Any]
    patient: Mapping[str, Any]
    rule_severity: dict[str, str] = field(default_factory=dict)
    evidence: list[Mapping[str, Any]] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=dict)
    hits: list[tuple[Rule, str, list[Mapping[str, Any]]]] = field(default_factory=list)

    @property
    def top_rule(self) -> Rule:
        """The member rule with the most serious finding (the card's topic)."""
        return max(self.rules, key=lambda r: (SEVERITY_RANK[self.rule_severity[r.id]], -self.rules.index(r)))


def collect_findings(rulebook: Rulebook, evaluations: Sequence[OrderEvaluation]) -> list[Finding]:
    """One finding per (order, rule or group), most serious first within each order.

    Generic instructions (rule.yaml ``closes_critical``) give way to a critical card on the
    same order; their text then closes that card, so nothing is lost when it is overridden."""
    result: list[Finding] = []
    suppressed = rulebook.suppressed_by_critical()
    for index, evaluation in enumerate(evaluations):
        order_ref, modality, facts = evaluation.order_ref, evaluation.modality, evaluation.facts
        order: Mapping[str, Any] = next((f for f in facts.values() if f.get("kind") == "order"), {})
        patient: Mapping[str, Any] = next((f for f in facts.values() if f.get("kind") == "patient"), {})
        found: dict[str, Finding] = {}
        for hit in evaluation.hits:
            variant = rulebook.variants[hit.variant]
            severity = variant.severity.get(modality)
            if severity is None:
                continue
            rule = rulebook.by_id[variant.rule_id]
            card_key = rulebook.card_code(rule)
            matched: list[Mapping[str, Any]] = [facts[fid] for fid in hit.fact_ids if fid in facts]
            finding = found.get(card_key)
            if finding is None:
                finding = found[card_key] = Finding(
                    card_key, order_ref, modality, index, [rule], severity, variant, order, patient
                )
            elif SEVERITY_RANK[severity] > SEVERITY_RANK[finding.severity]:
                finding.severity, finding.variant = severity, variant
            if rule not in finding.rules:
                finding.rules.append(rule)
            if SEVERITY_RANK[severity] > SEVERITY_RANK.get(finding.rule_severity.get(rule.id, ""), -1):
                finding.rule_severity[rule.id] = severity
            for fact in matched:
                if fact not in finding.evidence:
                    finding.evidence.append(fact)
            for name, value in variant.values.items():
                finding.values.setdefault(name, []).append(value)
            finding.hits.append((rule, severity, matched))
        order_findings = list(found.values())
        if any(f.severity == "critical" for f in order_findings):
            order_findings = [f for f in order_findings if f.key not in suppressed]
        result.extend(sorted(order_findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.key)))
    return result
