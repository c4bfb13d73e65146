"""Findings -> CDS Hooks cards: by default one card per order and severity tier (critical
"do not proceed", warning "assess first", info one checklist), or one card per rule within
each order when a site asks for it (``CDS_HOOKS_CARD_GROUPING=rule``).

Each finding is one line: its headline, the evidence in words with dates, why and what to
do. Codes and resource ids go to a collapsed Evidence section at the end. Every card lists
the rules it carries in ``extension["org.cryo-cds.findings"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import overrides
from ..ids import time_ordered_uuid
from ..rulebook import SEVERITY_RANK, Rulebook
from .findings import Finding
from .gap_words import reason_in_words
from .text import (
    OrderContext,
    context,
    evidence_codes,
    evidence_sentence,
    in_sentence,
    order_context,
    render,
    template_fields,
)

SOURCE_LABEL = "Cryotherapy safety rules"
TOPIC_SYSTEM = "https://example.org/fhir/cryo-cds/CodeSystem/rule"
OVERRIDE_REASON_SYSTEM = overrides.SYSTEM
FINDINGS_EXTENSION = "org.cryo-cds.findings"
GROUPINGS = ("order", "rule")
MAX_LINKS = 3
SUMMARY_MAX = 139
TIER_LEAD = {"critical": "Do not proceed with", "warning": "Assess before proceeding with", "info": "Checklist for"}
TIER_HEADING = {
    "critical": "**Do not proceed with {order}.**",
    "warning": "**Assess before proceeding with {order}.**",
    "info": "**Checklist for {order}:**",
}
MODALITY_NAMES = {
    "systemic": "whole-body cryotherapy",
    "local-destructive": "liquid-nitrogen cryotherapy",
    "local-cold": "local cold therapy",
}
MD_INCOMPLETE_VERSION = "1.2.0"


def order_names(findings: Sequence[Finding]) -> dict[str, str]:
    """Each order as the clinician ordered it; the site tells apart orders of one kind."""
    kinds: dict[str, set[str]] = {}
    for f in findings:
        kinds.setdefault(MODALITY_NAMES.get(f.modality, "cryotherapy"), set()).add(f.order_ref)
    names = {}
    for f in findings:
        name = MODALITY_NAMES.get(f.modality, "cryotherapy")
        if len(kinds[name]) > 1:
            site = f.order.get("site")
            name = f"{name} ({site})" if site else f"{name} (order {f.order_index + 1})"
        names[f.order_ref] = name
    return names


class CardBuilder:
    """Builds the cards of one call from its findings."""

    def __init__(self, rulebook: Rulebook, *, grouping: str = "order", base_url: str = "") -> None:
        if grouping not in GROUPINGS:
            raise ValueError(f"card grouping must be one of {GROUPINGS}, got {grouping!r}")
        self.rulebook = rulebook
        self.grouping = grouping
        self.base_url = base_url.rstrip("/")
        # What a critical card on an order of a modality closes with (§10.3): the instructions
        # of the generic card it suppressed (rule.yaml ``closes_critical``).
        self._closing = rulebook.closing_rules()
        self._group_findings = {g.id: g.finding for g in rulebook.groups.values()}
        # Every value name a card of this rulebook can print: the order's other numbers are not formatted.
        self._used_fields = template_fields(
            t
            for r in rulebook.rules
            for t in (
                r.summary,
                r.detail,
                r.finding,
                *(x for v in r.variants for x in (v.summary, v.finding, v.detail)),
            )
        )

    def build(self, findings: Sequence[Finding]) -> list[tuple[dict[str, Any], list[Finding]]]:
        """(card, the findings it carries), most serious cards first."""
        names = order_names(findings)
        run = _BuildRun(several_orders=len({f.order_ref for f in findings}) > 1, used_fields=self._used_fields)
        groups: dict[tuple[str, str], list[Finding]] = {}
        for f in findings:
            key = (f.order_ref, f.severity if self.grouping == "order" else f.key)
            groups.setdefault(key, []).append(f)
        built = [(self._card(run, members, names[members[0].order_ref]), members) for members in groups.values()]
        order_rank = {f.order_ref: f.order_index for f in findings}
        built.sort(key=lambda cm: (-SEVERITY_RANK[cm[0]["indicator"]], order_rank[cm[1][0].order_ref]))
        return built

    def _line(self, run: _BuildRun, finding: Finding) -> str:
        ctx = run.context(finding)
        params = self.rulebook.parameters
        evidence = list(dict.fromkeys(s for s in (evidence_sentence(f) for f in finding.evidence) if s))
        headline = self._headline(finding, ctx, optional=not evidence)
        details = [
            finding.variant.detail or r.detail if r.id == finding.variant.rule_id else r.detail for r in finding.rules
        ]
        why = " ".join(dict.fromkeys(render(d, ctx, params) for d in details))
        said = "; ".join(evidence)
        return f"- **{headline}** — " + (f"{said}. " if said else "") + why

    def _headline(self, finding: Finding, ctx: Mapping[str, str], *, optional: bool = True) -> str:
        if finding.key in self._group_findings:
            return self._group_findings[finding.key]
        return (
            render(finding.variant.finding, ctx, self.rulebook.parameters, optional=optional) or finding.rules[0].title
        )

    def _summary(self, run: _BuildRun, members: Sequence[Finding], order_name: str) -> str:
        if self.grouping == "rule":
            f = members[0]
            ctx = run.context(f)
            text = render(f.variant.summary, ctx, self.rulebook.parameters)
            if run.several_orders:
                text = f"{order_name[:1].upper() + order_name[1:]}: {text}"
            return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"
        lead = f"{TIER_LEAD[members[0].severity]} {order_name}: "
        heads = [in_sentence(self._headline(f, run.context(f))) for f in members]
        for shown in range(len(heads), 0, -1):
            rest = len(heads) - shown
            text = lead + "; ".join(heads[:shown]) + (f"; and {rest} more" if rest else "") + "."
            if len(text) <= SUMMARY_MAX:
                return text
        return (lead + heads[0])[: SUMMARY_MAX - 1].rstrip() + "…"

    def _card(self, run: _BuildRun, members: list[Finding], order_name: str) -> dict[str, Any]:
        first = members[0]
        severity = max((f.severity for f in members), key=SEVERITY_RANK.__getitem__)
        parts = [TIER_HEADING[severity].format(order=order_name)] if self.grouping == "order" else []
        parts.append("\n".join(self._line(run, f) for f in members))
        if severity == "critical" and first.modality in self._closing:
            rule_id, lead = self._closing[first.modality]
            rule = self.rulebook.by_id.get(rule_id)
            if rule is not None:
                text = render(rule.detail, {}, self.rulebook.parameters)
                parts.append(f"{lead}: {text[:1].lower() + text[1:]}")
        codes = list(dict.fromkeys(c for f in members for c in (evidence_codes(e) for e in f.evidence) if c))
        if codes:
            parts.append(
                "<details><summary>Evidence</summary>\n\n" + "\n".join(f"- {c}" for c in codes) + "\n\n</details>"
            )
        top = max(members, key=lambda f: SEVERITY_RANK[f.severity]).top_rule
        card: dict[str, Any] = {
            "uuid": time_ordered_uuid(),
            "summary": self._summary(run, members, order_name),
            "indicator": severity,
            "detail": "\n\n".join(parts),
            "source": {
                "label": SOURCE_LABEL,
                "url": f"{self.base_url}/rules/{top.id}",
                "topic": {"system": TOPIC_SYSTEM, "code": top.id, "display": top.title},
            },
        }
        suggestions = self._suggestions(members, severity, order_name)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "at-most-one" if severity == "critical" else "any"
        card["overrideReasons"] = override_reasons(members)
        links = list({link["url"]: link for f in members for r in f.rules for link in r.links}.values())
        if links:
            card["links"] = [
                {"label": link["title"], "url": link["url"], "type": "absolute"} for link in links[:MAX_LINKS]
            ]
        card["extension"] = {
            FINDINGS_EXTENSION: [
                {"rule": r.id, "version": r.version, "indicator": f.rule_severity[r.id]}
                for f in members
                for r in f.rules
            ]
        }
        return card

    def _suggestions(self, members: Sequence[Finding], severity: str, order_name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kinds = {s for f in members for r in f.rules for s in r.suggestions}
        if severity == "critical" and (self.grouping == "order" or "remove-order" in kinds):
            ref = members[0].order_ref
            out.append(
                {
                    "label": f"Cancel the {order_name} order",
                    "uuid": time_ordered_uuid(),
                    "actions": [
                        {"type": "delete", "description": f"Cancel the draft {order_name} order", "resourceId": ref}
                    ],
                }
            )
        if "order-missing-tests" in kinds:
            order_codes = {name: c for f in members for r in f.rules for name, c in r.order_codes.items()}
            for missing in dict.fromkeys(m for f in members for m in f.values.get("missing", [])):
                system, code, display = order_codes[missing]
                out.append(
                    {
                        "label": f"Order {missing} before {order_name}",
                        "uuid": time_ordered_uuid(),
                        "actions": [
                            {
                                "type": "create",
                                "description": f"Order {display}",
                                "resource": {
                                    "resourceType": "ServiceRequest",
                                    "status": "draft",
                                    "intent": "order",
                                    "code": {
                                        "coding": [{"system": system, "code": code, "display": display}],
                                        "text": display,
                                    },
                                },
                            }
                        ],
                    }
                )
        return out


def override_reasons(members: Sequence[Finding]) -> list[dict[str, str]]:
    """The card's reasons: its rules' reasons merged, shared codes first, one display per code."""
    merged: dict[str, str] = {}
    for f in members:
        for rule in f.rules:
            for reason in rule.override_reasons:
                merged.setdefault(reason["code"], reason["display"])
    if not merged:
        merged = {code: overrides.SHARED[code] for code in overrides.DEFAULT_CODES}
    shared = [c for c in overrides.SHARED if c in merged]
    ordered = shared + [c for c in merged if c not in overrides.SHARED]
    return [{"code": c, "system": OVERRIDE_REASON_SYSTEM, "display": merged[c]} for c in ordered]


GAP_NAMES = {
    "patient": "the patient's demographics",
    "conditions": "problem list",
    "medicationRequests": "medications",
    "observations": "observations (vital signs and results)",
    "observationsByCode": "observations (vital signs and results)",
    "devices": "devices and implants",
    "allergies": "allergies",
    "procedures": "recent procedures",
}
# A skipped resource ("Observation/x") or a follow-up query ("medicationRequests medications")
# is named after the part of the record it belongs to.
_GAP_PREFIXES = (
    ("Patient", "the patient's demographics"),
    ("Condition", "problem list"),
    ("Medication", "medications"),
    ("medication", "medications"),
    ("Observation", "observations (vital signs and results)"),
    ("Device", "devices and implants"),
    ("AllergyIntolerance", "allergies"),
    ("Procedure", "recent procedures"),
    ("draft order", "a draft cryotherapy order that could not be read"),
)


@dataclass
class _BuildRun:
    """One ``build`` call's own state: a builder is shared by concurrent calls (threads)."""

    several_orders: bool
    used_fields: frozenset[str]  # `template_fields` of the rulebook: the order numbers worth formatting
    contexts: dict[int, tuple[Finding, dict[str, str]]] = field(default_factory=dict)
    # The order's share of the values, shared by all its findings (an order has a dozen numbers).
    order_parts: dict[tuple[int, int], tuple[Finding, OrderContext]] = field(default_factory=dict)

    def context(self, finding: Finding) -> dict[str, str]:
        """The finding's template values, built once (its line and the card summary use them)."""
        known = self.contexts.get(id(finding))
        if known is None or known[0] is not finding:
            key = (id(finding.order), id(finding.patient))
            part = self.order_parts.get(key)
            if part is None or part[0].order is not finding.order or part[0].patient is not finding.patient:
                part = self.order_parts[key] = (
                    finding,
                    order_context(finding.order, finding.patient, self.used_fields),
                )
            known = self.contexts[id(finding)] = (
                finding,
                context(finding.evidence, finding.order, finding.patient, finding.values, part[1]),
            )
        return known[1]


def _gap_name(key: str) -> str:
    if key in GAP_NAMES:
        return GAP_NAMES[key]
    return next((name for prefix, name in _GAP_PREFIXES if key.startswith(prefix)), "part of the record")


def incomplete_card(gaps: Mapping[str, str]) -> dict[str, Any]:
    """MD-INCOMPLETE: the rules ran on part of the record; say which part is missing and why."""
    reasons: dict[str, dict[str, None]] = {}
    for key in sorted(gaps):
        reasons.setdefault(_gap_name(key), {})[reason_in_words(gaps[key])] = None
    missing = "\n".join(f"- **{name}**: {'; '.join(why)}." for name, why in reasons.items())
    return {
        "uuid": time_ordered_uuid(),
        "summary": "Part of the record could not be read: some cryotherapy checks were not run.",
        "indicator": "warning",
        "detail": (
            f"These could not be read, so the checks that need them were not run:\n\n{missing}\n\n"
            "Review them in the chart before signing the order.\n\n"
            "<details><summary>Evidence</summary>\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in sorted(gaps.items()))
            + "\n\n</details>"
        ),
        "source": {
            "label": SOURCE_LABEL,
            "topic": {"system": TOPIC_SYSTEM, "code": "MD-INCOMPLETE", "display": "Incomplete patient record"},
        },
        "overrideReasons": [
            {"code": "done-elsewhere", "system": OVERRIDE_REASON_SYSTEM, "display": overrides.SHARED["done-elsewhere"]}
        ],
        "extension": {
            FINDINGS_EXTENSION: [{"rule": "MD-INCOMPLETE", "version": MD_INCOMPLETE_VERSION, "indicator": "warning"}]
        },
    }


def findings_of(cards: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(rule id, indicator) of every finding the cards carry (for tests and clients)."""
    return [
        (item["rule"], item["indicator"])
        for card in cards
        for item in (card.get("extension") or {}).get(FINDINGS_EXTENSION, ())
    ]


def finding_codes(cards: Sequence[Mapping[str, Any]], groups: Mapping[str, str]) -> list[tuple[str, str]]:
    """(rule id, indicator) per finding on the cards, a grouped rule as its group (e.g.
    GRP-IMMUNE) with the highest indicator of the group's rules on that card.

    ``groups`` maps rule ids to group ids (``group_codes(rulebook)``)."""
    out: list[tuple[str, str]] = []
    for card in cards:
        grouped: dict[str, str] = {}
        for item in (card.get("extension") or {}).get(FINDINGS_EXTENSION, ()):
            code = groups.get(item["rule"])
            if code is None:
                out.append((item["rule"], item["indicator"]))
            elif SEVERITY_RANK[item["indicator"]] > SEVERITY_RANK.get(grouped.get(code, ""), -1):
                grouped[code] = item["indicator"]
        out.extend(grouped.items())
    return out


def group_codes(rulebook: Rulebook) -> dict[str, str]:
    """Rule id -> group id for the rules that share a card."""
    return {r.id: rulebook.card_code(r) for r in rulebook.rules if r.group in rulebook.groups}
