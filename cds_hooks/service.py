"""One hook call, start to finish: orders -> record -> facts -> engine -> cards -> audit.

Each step is a module of its own; this one only sequences them, times them, and turns
the result into the response and its decision record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .audit.records import CardRecord, DecisionRecord, FiredRule
from .cards import FINDINGS_EXTENSION, CardBuilder, collect_findings, incomplete_card
from .cards.findings import Finding
from .cards.unfinished import unfinished_card
from .deadline import CallDeadline
from .engine import Evaluator
from .errors import PreconditionFailed, error_body
from .evaluator import OrderEvaluation, engine_ready
from .factrecord import facts_to_record
from .facts import build_facts
from .fhirtime import utc_now
from .hooks import ORDER_SELECT, ORDER_SIGN, HookRequest
from .ids import time_ordered_uuid
from .nagging import Answer, FeedbackMemory, split_repeats, suppression_entry, window
from .orders import SystemicHeuristic, find_cryo_orders, looks_like_cryotherapy
from .prefetch import SUPPLEMENTARY_KEYS
from .record import (
    COMPLETENESS_KEYS,
    PREFETCH_QUERIES,
    PatientRecord,
    RecordSource,
    build_record,
    parse_draft_orders,
)
from .relevance import RuleReach
from .rulebook import Rulebook
from .terminology import Terminology


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str


SERVICES = {
    "cryotherapy-order-select": ServiceDefinition(
        "cryotherapy-order-select",
        ORDER_SELECT,
        "Cryotherapy order safety check",
        "Checks a selected cryotherapy order (liquid-nitrogen cryosurgery, cold applications, "
        "cryomassage, whole-body cryotherapy) against the patient's conditions, medications, "
        "devices, pregnancy status, observations, allergies and recent procedures.",
    ),
    "cryotherapy-order-sign": ServiceDefinition(
        "cryotherapy-order-sign",
        ORDER_SIGN,
        "Cryotherapy order safety check at signing",
        "Re-checks every cryotherapy order in the draft before it is signed, with its final dose, schedule and site.",
    ),
}


@dataclass
class Outcome:
    """What one call produced: the response body, its decision record and step timings."""

    status: int
    body: dict[str, Any]
    decision: DecisionRecord
    evaluated_rules: list[tuple[str, str]]
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Holds the per-process parts (rules, terminology, evaluator) and runs calls."""

    def __init__(
        self,
        rulebook: Rulebook,
        terminology: Terminology,
        evaluator: Evaluator,
        *,
        destruction_codes_imply_cryo: bool = False,
        clock: Callable[[], datetime] = utc_now,
        card_grouping: str = "order",
        public_base_url: str = "http://127.0.0.1:8080",
        policy_revision: str = "",
        repeat_critical_cards: bool = True,
        record_facts: bool = True,
    ):
        self.rulebook = rulebook
        self.cards = CardBuilder(rulebook, grouping=card_grouping, base_url=public_base_url)
        self.terminology = terminology
        # Which prefetch resources are worth validating; None validates every one.
        self.reach: RuleReach | None = RuleReach(terminology)
        self.evaluator = evaluator
        self.destruction_codes_imply_cryo = destruction_codes_imply_cryo
        self.systemic = SystemicHeuristic.from_parameters(rulebook.parameters)
        self.clock = clock
        # -- governance (issue 14): site policy, replayable facts, no nagging twice --
        self.policy_revision = policy_revision
        self.repeat_critical_cards = repeat_critical_cards
        self.record_facts = record_facts
        self.feedback_memory: FeedbackMemory | None = None  # set once the audit store is open
        self.by_section: Mapping[tuple[str | None, str | None], Pipeline] = {}  # per tenant/issuer

    def for_claims(self, claims: Mapping[str, Any] | None) -> Pipeline:
        """The pipeline of the policy section for a call's JWT (tenant, then issuer); this one
        (the site's) when the policy has no section for them or the call carries no JWT."""
        if not self.by_section or not claims:
            return self
        tenant, issuer = claims.get("tenant"), claims.get("iss")
        for key in ((tenant, issuer), (tenant, None), (None, issuer)):
            if key in self.by_section:
                return self.by_section[key]
        return self

    def attach_feedback_memory(self, memory: FeedbackMemory) -> None:
        """Let order-sign calls leave out findings already answered on order-select."""
        for pipeline in {id(p): p for p in [self, *self.by_section.values()]}.values():
            pipeline.feedback_memory = memory

    def run(
        self,
        service: ServiceDefinition,
        request: HookRequest,
        source: RecordSource | None = None,
        deadline: CallDeadline | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        now = self.clock()

        def lap(step: str, since: float) -> float:
            current = time.perf_counter()
            timings[step] = (current - since) * 1000
            return current

        drafts, unreadable = parse_draft_orders(request.draft_orders)
        orders = find_cryo_orders(
            drafts,
            self.terminology,
            request.selections,
            systemic=self.systemic,
            destruction_codes_imply_cryo=self.destruction_codes_imply_cryo,
        )
        unchecked = {
            f"draft order {d.ref}": f"not valid FHIR R4 ({d.reason}); its cryotherapy checks were not run"
            for d in unreadable
            if (request.selections is None or d.ref in request.selections)
            and looks_like_cryotherapy(d.raw, self.terminology)
        }
        draft_problems = [f"draftOrders {d.ref}: {d.reason}" for d in unreadable]
        mark = lap("orders", started)
        if not orders:
            cards = [incomplete_card(unchecked)] if unchecked else []
            return self._outcome(service, request, now, started, timings, cards, [], [], unchecked, [], draft_problems)

        record = build_record(request.prefetch, source, self.reach)
        mark = lap("parse", mark)
        # -- call deadline (issue 12): checked between steps; past it, orders go unchecked --
        unfinished: list[tuple[str, str]] = []
        if deadline is not None and deadline.passed():
            unfinished = [(o.ref, o.modality) for o in orders]
        # -- end call deadline --
        if not record.available and not unfinished:
            failure = PreconditionFailed(
                "The patient's record could not be obtained: no prefetch data and no reachable FHIR server",
                problems=[f"{key}: {why}" for key, why in sorted(record.gaps.items())],
            )
            outcome = self._outcome(
                service,
                request,
                now,
                started,
                timings,
                [],
                [],
                [(o.ref, o.modality) for o in orders],
                {},
                [],
                failure.problems,
            )
            outcome.status, outcome.body = 412, error_body(failure)
            outcome.decision = replace(outcome.decision, status=412)
            return outcome

        evaluations: list[OrderEvaluation] = []
        recorded: list[tuple[str, Any]] = []  # (modality, facts) per order, for facts_to_record
        engine_ms = facts_ms = 0.0
        for index, order in enumerate(orders):
            if unfinished or (deadline is not None and deadline.passed()):  # call deadline (issue 12)
                unfinished = [(o.ref, o.modality) for o in orders[index:]]
                break
            t0 = time.perf_counter()
            facts = build_facts(order, record, drafts, self.terminology, now, self.rulebook.parameters)
            t1 = time.perf_counter()
            facts = engine_ready(facts)
            hits = self.evaluator.evaluate(facts, ready=True)
            t2 = time.perf_counter()
            facts_ms += (t1 - t0) * 1000
            engine_ms += (t2 - t1) * 1000
            evaluations.append(OrderEvaluation(order.ref, order.modality, hits, {f["id"]: f for f in facts}))
            recorded.append((order.modality, facts))
        timings["facts"], timings["engine"] = facts_ms, engine_ms
        mark = time.perf_counter()

        findings = collect_findings(self.rulebook, evaluations)
        suppressed, fired = self._leave_out_repeats(request, findings, now)
        findings = [f for f in findings if not any(f is s for s, _ in suppressed)]
        cards = []
        for card, members in self.cards.build(findings):
            cards.append(card)
            for finding in members:
                for rule, severity, matched in finding.hits:
                    fired.append(
                        FiredRule(
                            rule_id=rule.id,
                            rule_version=rule.version,
                            severity=severity,
                            card_uuid=card["uuid"],
                            order_ref=finding.order_ref,
                            evidence=tuple(dict.fromkeys(f["ref"] for f in matched if "ref" in f)),
                            facts={f["id"]: {k: v for k, v in f.items() if k != "sid"} for f in matched},
                        )
                    )
        gaps = {**_reportable_gaps(record), **unchecked}
        if gaps:
            cards.insert(_first_below_warning(cards), incomplete_card(gaps))
        lap("cards", mark)
        evaluated = [(r.id, r.version) for r in self.rulebook.rules] if evaluations else []
        data_gaps = [f"{k}: {v}" for k, v in sorted(gaps.items())] + draft_problems
        if unfinished and deadline is not None:  # call deadline (issue 12): say so on a card and in the log
            first_below_critical = next((i for i, c in enumerate(cards) if c["indicator"] != "critical"), len(cards))
            cards.insert(first_below_critical, unfinished_card(unfinished, partly=bool(evaluations)))
            data_gaps.append(
                f"call deadline: stopped after {deadline.elapsed_s():.2f} s (limit {deadline.limit_s:g} s); "
                "not checked: " + ", ".join(ref for ref, _modality in unfinished)
            )
        hours = window(self.rulebook.parameters).total_seconds() / 3600
        facts_record = facts_to_record(recorded, self.rulebook.parameters) if self.record_facts else None
        left_out = tuple(suppression_entry(f, answers, hours) for f, answers in suppressed)
        return self._outcome(
            service,
            request,
            now,
            started,
            timings,
            cards,
            fired,
            [(o.ref, o.modality) for o in orders],
            gaps,
            evaluated,
            data_gaps,
            facts=facts_record,
            suppressed=left_out,
        )

    def _leave_out_repeats(
        self, request: HookRequest, findings: list[Finding], now: datetime
    ) -> tuple[list[tuple[Finding, list[Answer]]], list[FiredRule]]:
        """No nagging twice (cds_hooks.nagging): on order-sign, the findings already answered
        on order-select, and their hits logged without a card."""
        if request.hook != ORDER_SIGN or self.feedback_memory is None or not findings:
            return [], []
        refs = sorted({f.order_ref for f in findings})
        answered = self.feedback_memory.answered(request.patient_id, refs, now - window(self.rulebook.parameters))
        _shown, repeats = split_repeats(findings, answered, repeat_critical=self.repeat_critical_cards)
        fired = [
            FiredRule(
                rule_id=rule.id,
                rule_version=rule.version,
                severity=severity,
                card_uuid=None,
                order_ref=finding.order_ref,
                evidence=tuple(dict.fromkeys(f["ref"] for f in matched if "ref" in f)),
                facts={f["id"]: {k: v for k, v in f.items() if k != "sid"} for f in matched},
            )
            for finding, _answers in repeats
            for rule, severity, matched in finding.hits
        ]
        return repeats, fired

    def _outcome(
        self,
        service: ServiceDefinition,
        request: HookRequest,
        now: datetime,
        started: float,
        timings: dict[str, float],
        cards: list[dict[str, Any]],
        fired: list[FiredRule],
        orders: list[tuple[str, str]],
        gaps: Mapping[str, str],
        evaluated: list[tuple[str, str]],
        data_gaps: list[str] | None = None,
        facts: Mapping[str, Any] | None = None,
        suppressed: tuple[Mapping[str, Any], ...] = (),
    ) -> Outcome:
        latency = (time.perf_counter() - started) * 1000
        decision = DecisionRecord(
            decision_id=time_ordered_uuid(),
            created_at=now,
            service_id=service.id,
            hook=request.hook,
            hook_instance=request.hook_instance,
            patient_id=request.patient_id,
            rules_revision=self.rulebook.revision,
            evaluator=self.evaluator.name,
            latency_ms=latency,
            orders=tuple(orders),
            fired=tuple(fired),
            cards=tuple(_card_record(c) for c in cards),
            data_gaps=tuple(data_gaps or ()),
            policy_revision=self.policy_revision,
            facts=facts,
            suppressed=suppressed,
        )
        timings["total"] = latency
        return Outcome(200, {"cards": cards}, decision, evaluated, timings)


def _card_record(card: Mapping[str, Any]) -> CardRecord:
    """What the log keeps of a card: enough to attribute feedback to each of its rules and
    to know the display of the override reason a clinician picked."""
    return CardRecord(
        card["uuid"],
        card["source"]["topic"]["code"],
        card["indicator"],
        card["summary"],
        tuple(s["uuid"] for s in card.get("suggestions", ())),
        rule_ids=tuple(dict.fromkeys(item["rule"] for item in card.get("extension", {}).get(FINDINGS_EXTENSION, ()))),
        override_reasons=tuple((r["code"], r["display"]) for r in card.get("overrideReasons", ())),
    )


def _reportable_gaps(record: PatientRecord) -> dict[str, str]:
    """Missing parts that leave rules unchecked and so deserve an MD-INCOMPLETE warning: the
    queries not answered, every resource that was skipped because it could not be read, and a
    supplementary query that was asked and failed (its resources may be missing)."""
    reportable = (*COMPLETENESS_KEYS, *SUPPLEMENTARY_KEYS)
    return {**{k: v for k, v in record.gaps.items() if k in reportable}, **record.unread}


def _first_below_warning(cards: list[dict[str, Any]]) -> int:
    for index, card in enumerate(cards):
        if card["indicator"] == "info":
            return index
    return len(cards)


__all__ = ["PREFETCH_QUERIES", "SERVICES", "Outcome", "Pipeline", "ServiceDefinition"]
