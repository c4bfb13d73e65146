"""What-if replay: re-evaluate the facts stored with past decisions under another rules
folder and/or site policy, and say per rule which orders would have got different findings.

Why: a rule change is a clinical change; before shipping one, a site can ask "which of last
month's orders would have been told something else?" and get the answer from its own log.
The baseline is what the log says each order was told (its rule hits, shown or left out as
a repeat); the replay runs the stored facts through the new rulebook and the same findings
step the service uses. Rules testing facts the log does not keep, and decisions logged
without facts, are reported, never skipped silently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, true

from .audit.models import Decision, DecisionOrder, RuleHit
from .audit.store import AuditStore
from .cards.findings import collect_findings
from .evaluator import OrderEvaluation, PlainEvaluator, engine_ready
from .factrecord import FACT_BUILD_PARAMETERS, RECORDED_FIELDS, built_with, facts_from_record
from .rulebook import SENTINEL_KIND, SEVERITY_RANK, Rulebook

BATCH = 500
EXAMPLES = 3
OrderKey = tuple[str, str]  # (decision id, order reference)


@dataclass
class RuleChange:
    """What one rule would change: orders gaining or losing its finding, and re-graded ones."""

    rule_id: str
    gained: list[OrderKey] = field(default_factory=list)
    lost: list[OrderKey] = field(default_factory=list)
    regraded: dict[str, list[OrderKey]] = field(default_factory=dict)  # "warning -> critical"

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "gained": len(self.gained),
            "lost": len(self.lost),
            "severity_changes": {k: len(v) for k, v in sorted(self.regraded.items())},
            "examples": {
                "gained": _examples(self.gained),
                "lost": _examples(self.lost),
                **{k: _examples(v) for k, v in sorted(self.regraded.items())},
            },
            "orders": {
                "gained": [list(k) for k in self.gained],
                "lost": [list(k) for k in self.lost],
                **{k: [list(o) for o in v] for k, v in sorted(self.regraded.items())},
            },
        }

    def line(self) -> str:
        parts = []
        if self.gained:
            parts.append(f"{len(self.gained)} order(s) gain the finding (e.g. {', '.join(_examples(self.gained))})")
        if self.lost:
            parts.append(f"{len(self.lost)} order(s) lose the finding (e.g. {', '.join(_examples(self.lost))})")
        for change, orders in sorted(self.regraded.items()):
            parts.append(f"{len(orders)} order(s) {change} (e.g. {', '.join(_examples(orders))})")
        return f"{self.rule_id}: " + "; ".join(parts)


def _examples(orders: Sequence[OrderKey]) -> list[str]:
    return list(dict.fromkeys(did for did, _ in orders))[:EXAMPLES]


@dataclass
class ReplayReport:
    rules_revision: str
    policy_revision: str
    since: datetime | None
    until: datetime | None
    decisions: int = 0
    orders: int = 0
    without_facts: int = 0
    changes: dict[str, RuleChange] = field(default_factory=dict)
    cannot_replay: dict[str, list[str]] = field(default_factory=dict)  # rule -> facts it needs
    unchanged_rules: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "rules_revision": self.rules_revision,
            "policy_revision": self.policy_revision,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "decisions_replayed": self.decisions,
            "orders_replayed": self.orders,
            "decisions_without_facts": self.without_facts,
            "rules": [c.as_json() for _, c in sorted(self.changes.items())],
            "cannot_replay": [{"rule": r, "needs_facts": need} for r, need in sorted(self.cannot_replay.items())],
            "unchanged_rules": self.unchanged_rules,
        }

    def lines(self) -> list[str]:
        period = f"{_day(self.since)} .. {_day(self.until)}"
        out = [
            f"replayed {self.decisions} decisions ({self.orders} cryotherapy orders), {period}, "
            f"rules {self.rules_revision}, policy {self.policy_revision}"
        ]
        if self.without_facts:
            out.append(
                f"{self.without_facts} decision(s) in the period carry no facts (logged before facts were "
                "recorded, or without a cryotherapy order evaluated): not replayed"
            )
        out += [c.line() for _, c in sorted(self.changes.items())]
        out += [f"{r}: cannot replay: needs facts {', '.join(n)}" for r, n in sorted(self.cannot_replay.items())]
        out.append(
            f"no change for {self.unchanged_rules} rule(s)" if self.changes or self.cannot_replay else "no change"
        )
        return out


def _day(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "…"


def needed_facts(rulebook: Rulebook, recorded: Iterable[Mapping[str, Any]] = ()) -> dict[str, list[str]]:
    """Rules that test facts the log does not keep: rule id -> the facts ("kind.field").
    ``recorded`` (stored fact records) adds facts built with other parameters than these."""
    missing: dict[str, set[str]] = defaultdict(set)
    for variant in rulebook.variants.values():
        for term in variant.definition["all"]:
            for pattern in term.values():
                kind, fields = _pattern_fields(pattern)
                if kind == SENTINEL_KIND or kind is None:
                    continue
                kept = RECORDED_FIELDS.get(kind, frozenset())
                missing[variant.rule_id].update(f"{kind}.{name}" for name in fields if name not in kept)
    stale = _stale_build_parameters(rulebook, recorded)
    for variant in rulebook.variants.values():
        kinds = {_pattern_fields(p)[0] for term in variant.definition["all"] for p in term.values()}
        for name, (affected, value, was) in stale.items():
            if kinds & set(affected):
                missing[variant.rule_id].update(
                    f"{kind} built with {name}={value} (recorded with {was})" for kind in affected
                )
    # A critical finding leaves out the generic instruction cards (rule.yaml closes_critical):
    # when a rule that can be critical cannot be replayed, neither can they.
    critical = {
        rule_id
        for rule_id, need in missing.items()
        if need and any("critical" in v.severity.values() for v in rulebook.by_id[rule_id].variants)
    }
    for generic in sorted(rulebook.suppressed_by_critical()):
        if critical - {generic}:
            for rule_id in sorted(critical - {generic}):
                missing[generic].update(
                    f"{need} (through {rule_id}, whose critical finding leaves this one out)"
                    for need in missing[rule_id]
                )
    return {rule: sorted(need) for rule, need in missing.items() if need}


def _pattern_fields(pattern: Mapping[str, Any]) -> tuple[str | None, set[str]]:
    kind: str | None = None
    fields: set[str] = set()

    def walk(term: Mapping[str, Any]) -> None:
        nonlocal kind
        for key, value in term.items():
            if key in ("$and", "$or"):
                for item in value:
                    walk(item)
            elif key.startswith("$"):
                fields.update(value)
            elif key == "kind":
                kind = value
            else:
                fields.add(key)

    walk(pattern)
    return kind, fields


def _stale_build_parameters(
    rulebook: Rulebook, recorded: Iterable[Mapping[str, Any]]
) -> dict[str, tuple[tuple[str, ...], Any, str]]:
    stale: dict[str, tuple[tuple[str, ...], Any, str]] = {}
    for record in recorded:
        for name, affected in FACT_BUILD_PARAMETERS.items():
            was = built_with(record).get(name)
            now = rulebook.parameters.get(name)
            if was is not None and now is not None and was != now:
                stale.setdefault(name, (affected, now, str(was)))
    return stale


def _period(since: datetime | None, until: datetime | None) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = [Decision.status == 200]
    if since is not None:
        clauses.append(Decision.created_at >= since)
    if until is not None:
        clauses.append(Decision.created_at < until)
    return and_(true(), *clauses)


def replay(
    store: AuditStore,
    rulebook: Rulebook,
    *,
    policy_revision: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[Sequence[list[str]]], Iterable[list[str]]] = lambda batches: batches,
) -> ReplayReport:
    """Replay the period's decisions under ``rulebook`` (a policy already applied to it)."""
    report = ReplayReport(rulebook.revision, policy_revision, since, until)
    period = _period(since, until)
    with store.reading() as conn:
        ids = [
            row.decision_id
            for row in conn.execute(
                select(Decision.decision_id).where(period, Decision.facts.is_not(None)).order_by(Decision.created_at)
            )
        ]
        total = conn.execute(
            select(func.count())
            .select_from(Decision)
            .where(period, Decision.decision_id.in_(select(DecisionOrder.decision_id)))
        ).scalar_one()
    report.without_facts = max(0, int(total) - len(ids))
    evaluator = PlainEvaluator(rulebook.engine_rules())
    skip = set(needed_facts(rulebook))
    builds: dict[str, Mapping[str, Any]] = {}  # distinct fact-building parameters seen
    batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
    for batch in progress(batches):
        for did, record, before, after in _replay_batch(store, rulebook, evaluator, batch):
            builds.setdefault(repr(sorted(built_with(record).items())), record)
            report.decisions += 1
            report.orders += len(record.get("orders") or ())
            _compare(report, did, before, after, skip)
    # Facts built with other parameters than the new rulebook's cannot show its effect.
    report.cannot_replay = needed_facts(rulebook, builds.values())
    for rule_id in report.cannot_replay:
        report.changes.pop(rule_id, None)
    changed = set(report.changes) | set(report.cannot_replay)
    report.unchanged_rules = len({r.id for r in rulebook.rules} - changed)
    return report


def _replay_batch(
    store: AuditStore, rulebook: Rulebook, evaluator: PlainEvaluator, ids: Sequence[str]
) -> Iterator[tuple[str, Mapping[str, Any], dict[OrderKey, str], dict[OrderKey, str]]]:
    """(decision id, its facts record, before, after); before and after map (order ref, rule
    id) -> severity."""
    with store.reading() as conn:
        facts: dict[str, Any] = {
            row.decision_id: row.facts
            for row in conn.execute(select(Decision.decision_id, Decision.facts).where(Decision.decision_id.in_(ids)))
        }
        refs: dict[str, list[str]] = defaultdict(list)
        for row in conn.execute(
            select(DecisionOrder.decision_id, DecisionOrder.order_ref)
            .where(DecisionOrder.decision_id.in_(ids))
            .order_by(DecisionOrder.id)
        ):
            refs[row.decision_id].append(row.order_ref)
        hits: dict[str, dict[OrderKey, str]] = defaultdict(dict)
        for hit in conn.execute(
            select(RuleHit.decision_id, RuleHit.order_ref, RuleHit.rule_id, RuleHit.severity).where(
                RuleHit.decision_id.in_(ids)
            )
        ):
            _keep_highest(hits[hit.decision_id], (hit.order_ref, hit.rule_id), hit.severity)
    for did in ids:
        record = facts.get(did)
        orders = facts_from_record(record)
        if orders is None or record is None:
            continue
        evaluations = []
        for index, (modality, order_facts) in enumerate(orders):
            ref = refs[did][index] if index < len(refs[did]) else f"order {index + 1}"
            ready = engine_ready(order_facts)  # type: ignore[arg-type]
            evaluations.append(
                OrderEvaluation(ref, modality, evaluator.evaluate(ready, ready=True), {f["id"]: f for f in ready})
            )
        after: dict[OrderKey, str] = {}
        for finding in collect_findings(rulebook, evaluations):
            for rule, severity, _ in finding.hits:
                _keep_highest(after, (finding.order_ref, rule.id), severity)
        yield did, record, hits.get(did, {}), after


def _keep_highest(into: dict[OrderKey, str], key: OrderKey, severity: str) -> None:
    if key not in into or SEVERITY_RANK.get(severity, -1) > SEVERITY_RANK.get(into[key], -1):
        into[key] = severity


def _compare(
    report: ReplayReport, did: str, before: Mapping[OrderKey, str], after: Mapping[OrderKey, str], skip: set[str]
) -> None:
    for key in before.keys() | after.keys():
        ref, rule_id = key
        if rule_id in skip:
            continue
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        change = report.changes.setdefault(rule_id, RuleChange(rule_id))
        if old is None:
            change.gained.append((did, ref))
        elif new is None:
            change.lost.append((did, ref))
        else:
            change.regraded.setdefault(f"{old} -> {new}", []).append((did, ref))


__all__ = ["ReplayReport", "RuleChange", "needed_facts", "replay"]
