"""Rule hits -> CDS Hooks cards: severity by modality, one card per rule (or group),
suppression of generic instructions under a critical card, evidence in the detail,
suggestions and override reasons. Plain data in, plain JSON out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .rulebook import SEVERITY_RANK, Rule, Rulebook, Variant

SOURCE_LABEL = "Cryotherapy safety rules"
TOPIC_SYSTEM = "https://example.org/fhir/cryo-cds/CodeSystem/rule"
OVERRIDE_REASON_SYSTEM = "https://example.org/fhir/cryo-cds/CodeSystem/override-reason"
GROUPS = {"immune": "GRP-IMMUNE"}
GROUP_SUMMARIES = {"GRP-IMMUNE": "Immunocompromised (condition/medication on record): cryotherapy may "
                                 "affect immune function; physician review required."}
SUPPRESSED_BY_CRITICAL = ("LC-AFTERCARE", "PR-SYS-SAFETY")
MISSING_TEST_ORDERS = {  # PR-SYS-EXAM: what to order for each missing exam
    "ECG": ("http://loinc.org", "11524-6", "EKG study"),
    "blood test": ("http://loinc.org", "58410-2", "CBC panel - Blood by Automated count"),
    "urine test": ("http://loinc.org", "24356-8", "Urinalysis complete panel - Urine"),
}
DEFAULT_OVERRIDE_REASONS = (
    {"code": "physician-assessed", "display": "Physician risk assessment done"},
    {"code": "benefit-outweighs-risk", "display": "Benefit outweighs risk for this patient"},
    {"code": "data-incorrect", "display": "Record is out of date or incorrect"},
)


@dataclass
class Finding:
    """Everything one rule (or group) said about this call, before it becomes a card."""

    rule_id: str
    rules: list[Rule]
    severity: str
    variant: Variant
    orders: list[str] = field(default_factory=list)
    evidence: list[Mapping[str, Any]] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=dict)
    hits: list[tuple[Rule, str, str, list[Mapping[str, Any]]]] = field(default_factory=list)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


_EVIDENCE_ONLY = {"date", "label", "ref", "id", "kind", "code", "system", "value_text"}


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "not recorded"


def _placeholders(finding: Finding, order_facts: Mapping[str, Mapping[str, Any]], patient: Mapping[str, Any]) -> _Defaulting:
    ctx = _Defaulting()
    by_kind: dict[str, list[str]] = {}
    for fact in finding.evidence:
        by_kind.setdefault(fact["kind"], []).append(str(fact.get("label", fact["kind"])))
        for key, value in fact.items():
            ctx.setdefault(key, _fmt(value))
        if fact["kind"] == "lab":
            ctx[str(fact["test"])] = _fmt(fact.get("value", fact.get("positive")))
            ctx.setdefault("result", "positive" if fact.get("positive") else _fmt(fact.get("value", "")))
    for key, values in finding.values.items():
        ctx[key] = ", ".join(dict.fromkeys(_fmt(v) for v in values))
    first_order = order_facts.get(finding.orders[0], {}) if finding.orders else {}
    for key, value in first_order.items():
        if key not in _EVIDENCE_ONLY:  # an undated finding must not borrow the order's date
            ctx.setdefault(key, _fmt(value))
    if "date" in first_order:
        ctx["treatment_date"] = str(first_order["date"])
    if "freeze_s" in first_order:
        ctx["t"] = _fmt(first_order["freeze_s"])
        ctx["d"] = _fmt(first_order["freeze_s"] / 60)
    if "temp_c" in first_order:
        ctx["T"] = _fmt(first_order["temp_c"])
    ctx["n"] = _fmt(first_order.get("sessions_per_week", first_order.get("week_load", 0)))
    ctx["c"] = _fmt(first_order.get("sessions_per_course", 0))
    ctx.setdefault("age", _fmt(patient.get("age", "unknown")))
    names = {"condition": "condition", "medication": "drug", "device": "device", "allergy": "allergy",
             "procedure": "procedure", "planned": "procedure"}
    for kind, key in names.items():
        if kind in by_kind:
            ctx[key] = ", ".join(dict.fromkeys(by_kind[kind]))
    labels = [label for group in by_kind.values() for label in group if group]
    ctx["evidence"] = ", ".join(dict.fromkeys(labels)) or "record"
    ctx["triggers"] = ctx["evidence"]
    ctx.setdefault("date", "date unknown")
    return ctx


def _evidence_lines(finding: Finding) -> list[str]:
    lines = []
    for fact in finding.evidence:
        if fact["kind"] in ("order", "patient", "record"):
            continue
        code = f" — {fact['system'].rsplit('/', 1)[-1]} {fact['code']}" if fact.get("code") and fact.get("system") else ""
        value = f", value {fact['value_text']}" if fact.get("value_text") else ""
        when = f", {fact['date']}" if fact.get("date") else ""
        lines.append(f"- {fact.get('ref', fact['kind'])}: {fact.get('label', '')}{code}{value}{when}")
    return list(dict.fromkeys(lines))


def _suggestions(finding: Finding) -> list[dict[str, Any]]:
    kinds = {s for rule in finding.rules for s in rule.suggestions}
    out: list[dict[str, Any]] = []
    if "remove-order" in kinds and finding.severity == "critical":
        out.append({
            "label": "Cancel the cryotherapy order",
            "uuid": str(uuid.uuid4()),
            "actions": [{"type": "delete", "description": f"Remove the draft order {ref}", "resourceId": ref}
                        for ref in finding.orders],
        })
    if "order-missing-tests" in kinds:
        for missing in finding.values.get("missing", []):
            system, code, display = MISSING_TEST_ORDERS[missing]
            out.append({
                "label": f"Order {missing} before whole-body cryotherapy",
                "uuid": str(uuid.uuid4()),
                "actions": [{"type": "create", "description": f"Order {display}", "resource": {
                    "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                    "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
                }}],
            })
    return out


def build_card(finding: Finding, order_facts: Mapping[str, Mapping[str, Any]],
               patient: Mapping[str, Any]) -> dict[str, Any]:
    ctx = _placeholders(finding, order_facts, patient)
    summary = GROUP_SUMMARIES.get(finding.rule_id, finding.variant.summary).format_map(ctx)
    if len(summary) > 139:
        summary = summary[:138].rstrip() + "…"
    rule = finding.rules[0]
    detail_parts = [r.detail.format_map(ctx) for r in finding.rules]
    evidence = _evidence_lines(finding)
    if evidence:
        detail_parts.append("**Evidence**\n\n" + "\n".join(evidence))
    sources = list(dict.fromkeys(s for r in finding.rules for s in r.sources))
    detail_parts.append("**Sources:** " + "; ".join(sources))
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": summary,
        "indicator": finding.severity,
        "detail": "\n\n".join(detail_parts),
        "source": {"label": SOURCE_LABEL, "topic": {"system": TOPIC_SYSTEM, "code": finding.rule_id,
                                                    "display": rule.title if len(finding.rules) == 1 else "Immunocompromise"}},
    }
    suggestions = _suggestions(finding)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    reasons = [r for rule in finding.rules for r in rule.override_reasons] or list(DEFAULT_OVERRIDE_REASONS)
    card["overrideReasons"] = [{"code": r["code"], "system": OVERRIDE_REASON_SYSTEM,
                                "display": r["display"]} for r in {r["code"]: r for r in reasons}.values()]
    return card


def collect_findings(rulebook: Rulebook, evaluations: Sequence[tuple[str, str, Sequence[tuple[str, Sequence[tuple[str, str]]]], Mapping[str, Mapping[str, Any]]]]) -> list[Finding]:
    """Fold every hit of every evaluated order into one finding per rule id (or group).

    ``evaluations`` holds (order ref, modality, hits, facts by id) per cryotherapy order."""
    findings: dict[str, Finding] = {}
    for order_ref, modality, hits, facts in evaluations:
        for key, pairs in hits:
            variant = rulebook.variants[key]
            severity = variant.severity.get(modality)
            if severity is None:
                continue
            rule = rulebook.by_id[variant.rule_id]
            card_id = GROUPS.get(rule.group or "", rule.id)
            matched = [facts[fid] for _alias, fid in pairs if fid in facts]
            finding = findings.get(card_id)
            if finding is None:
                finding = findings[card_id] = Finding(card_id, [rule], severity, variant)
            elif SEVERITY_RANK[severity] > SEVERITY_RANK[finding.severity]:
                finding.severity, finding.variant = severity, variant
            if rule not in finding.rules:
                finding.rules.append(rule)
            if order_ref not in finding.orders:
                finding.orders.append(order_ref)
            for fact in matched:
                if fact not in finding.evidence:
                    finding.evidence.append(fact)
            for name, value in variant.values.items():
                finding.values.setdefault(name, []).append(value)
            finding.hits.append((rule, severity, order_ref, matched))
    result = list(findings.values())
    if any(f.severity == "critical" for f in result):
        result = [f for f in result if f.rule_id not in SUPPRESSED_BY_CRITICAL]
    return sorted(result, key=lambda f: (-SEVERITY_RANK[f.severity], f.rule_id))


def incomplete_card(gaps: Mapping[str, str]) -> dict[str, Any]:
    """MD-INCOMPLETE: the rules ran on part of the record; say which part is missing."""
    missing = ", ".join(sorted(gaps))
    return {
        "uuid": str(uuid.uuid4()),
        "summary": "Part of the record or of the order could not be read: some cryotherapy checks were not run.",
        "indicator": "warning",
        "detail": ("These parts of the record could not be obtained, so the rules that need them were not "
                   f"checked: **{missing}**.\n\n" + "\n".join(f"- {k}: {v}" for k, v in sorted(gaps.items()))
                   + "\n\nReview them in the chart before signing the order."),
        "source": {"label": SOURCE_LABEL, "topic": {"system": TOPIC_SYSTEM, "code": "MD-INCOMPLETE",
                                                    "display": "Incomplete patient record"}},
        "overrideReasons": [{"code": "reviewed-in-chart", "system": OVERRIDE_REASON_SYSTEM,
                             "display": "Reviewed the missing data in the chart"}],
    }
