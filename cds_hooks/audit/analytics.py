"""Read-only questions over the decision log: which rules fire, how often they are
overridden and why, and why one decision or card came out the way it did.

Everything returns plain JSON-able dicts (datetimes as ISO 8601 strings) so the CLI and an
HTTP endpoint can print them unchanged. A period is `since <= decision.created_at < until`,
either end optional; feedback counts belong to the period of the decision that issued the
card, so a rate compares responses with the cards they answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, join, select, true

from .models import Card, Decision, DecisionOrder, EvaluationSetMember, Feedback, RuleHit
from .store import AuditStore

TOP_REASONS = 5
#: The fields of a rule_summary row, in the order the CLI table and the console CSV show them.
RULE_SUMMARY_COLUMNS = (
    "rule_id",
    "rule_version",
    "evaluations",
    "fires",
    "fire_rate",
    "cards",
    "accepted",
    "overridden",
    "override_rate",
    "comments",
    "top_override_reasons",
)

# Each decision with the rules evaluated for it: one row per (decision, rule).
Evaluated = EvaluationSetMember
EVALUATIONS = join(Decision, Evaluated, Evaluated.set_key == Decision.evaluation_set)


def rule_summary(
    store: AuditStore,
    since: datetime | None = None,
    until: datetime | None = None,
    service: str | None = None,
    policy_revision: str | None = None,
) -> list[dict[str, Any]]:
    """Per (rule_id, rule_version): evaluations, fires, cards and clinician responses.

    `fires` counts decisions in which the rule fired (not hits per order), so `fire_rate`
    = fires / evaluations stays within 0..1. Feedback on a card counts for every rule whose
    hit produced that card (a grouped card speaks for each of its rules).
    `override_rate` is overridden / (accepted + overridden), None without feedback.
    `service` keeps only the decisions of that CDS service, `policy_revision` only those
    made under that site policy.
    """
    period = _period(since, until, service, policy_revision)
    key_cols = (Evaluated.rule_id, Evaluated.rule_version)
    evaluations = select(*key_cols, func.count().label("n")).select_from(EVALUATIONS).where(period).group_by(*key_cols)
    hits = (
        select(
            RuleHit.rule_id,
            RuleHit.rule_version,
            func.count(RuleHit.decision_id.distinct()).label("fires"),
            func.count(RuleHit.card_uuid.distinct()).label("cards"),
        )
        .join(Decision, Decision.decision_id == RuleHit.decision_id)
        .where(period)
        .group_by(RuleHit.rule_id, RuleHit.rule_version)
    )
    card_rule = (
        select(RuleHit.card_uuid, RuleHit.rule_id, RuleHit.rule_version)
        .distinct()
        .join(Decision, Decision.decision_id == RuleHit.decision_id)
        .where(period, RuleHit.card_uuid.is_not(None))
        .subquery()
    )
    answered = and_(Feedback.card_uuid == card_rule.c.card_uuid, Feedback.known_card.is_(True))
    responses = (
        select(
            card_rule.c.rule_id,
            card_rule.c.rule_version,
            func.sum(case((Feedback.outcome == "accepted", 1), else_=0)).label("accepted"),
            func.sum(case((Feedback.outcome == "overridden", 1), else_=0)).label("overridden"),
            func.sum(case((Feedback.user_comment.is_not(None), 1), else_=0)).label("comments"),
        )
        .join(Feedback, answered)
        .group_by(card_rule.c.rule_id, card_rule.c.rule_version)
    )
    reasons = (
        select(
            card_rule.c.rule_id,
            card_rule.c.rule_version,
            Feedback.override_system,
            Feedback.override_code,
            func.max(Feedback.override_display).label("display"),
            func.count().label("n"),
        )
        .join(Feedback, answered)
        .where(Feedback.outcome == "overridden", Feedback.override_code.is_not(None))
        .group_by(
            card_rule.c.rule_id,
            card_rule.c.rule_version,
            Feedback.override_system,
            Feedback.override_code,
        )
    )
    with store.reading() as conn:
        evaluated = {(r.rule_id, r.rule_version): int(r.n) for r in conn.execute(evaluations)}
        fired = {(r.rule_id, r.rule_version): r for r in conn.execute(hits)}
        answers = {(r.rule_id, r.rule_version): r for r in conn.execute(responses)}
        top: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in conn.execute(reasons):
            top[(r.rule_id, r.rule_version)].append(
                {
                    "code": r.override_code,
                    "system": r.override_system,
                    "display": r.display,
                    "count": int(r.n),
                }
            )

    summary = []
    for key in sorted(evaluated):
        n_eval = evaluated[key]
        hit = fired.get(key)
        fires = int(hit.fires) if hit else 0
        answer = answers.get(key)
        accepted = int(answer.accepted or 0) if answer else 0
        overridden = int(answer.overridden or 0) if answer else 0
        answered_n = accepted + overridden
        summary.append(
            {
                "rule_id": key[0],
                "rule_version": key[1],
                "evaluations": n_eval,
                "fires": fires,
                "fire_rate": fires / n_eval if n_eval else None,
                "cards": int(hit.cards) if hit else 0,
                "accepted": accepted,
                "overridden": overridden,
                "override_rate": overridden / answered_n if answered_n else None,
                "top_override_reasons": sorted(top.get(key, []), key=lambda r: (-r["count"], r["code"]))[:TOP_REASONS],
                "comments": int(answer.comments or 0) if answer else 0,
            }
        )
    return summary


def silent_rules(
    store: AuditStore,
    all_rule_ids: Iterable[str],
    since: datetime | None = None,
    until: datetime | None = None,
    service: str | None = None,
) -> dict[str, list[str]]:
    """Rules of the rulebook that said nothing in the period.

    `never_evaluated`: no cryotherapy order ever reached them (order detection or modality
    scope problem). `never_fired`: evaluated but never matched (too narrow, or facts never
    derived). The two lists do not overlap.
    """
    period = _period(since, until, service)
    wanted = set(all_rule_ids)
    with store.reading() as conn:
        evaluated = set(
            conn.execute(select(Evaluated.rule_id).distinct().select_from(EVALUATIONS).where(period)).scalars()
        )
        fired = set(
            conn.execute(
                select(RuleHit.rule_id)
                .distinct()
                .join(Decision, Decision.decision_id == RuleHit.decision_id)
                .where(period)
            ).scalars()
        )
    return {
        "never_evaluated": sorted(wanted - evaluated),
        "never_fired": sorted((wanted & evaluated) - fired),
    }


def explain_decision(store: AuditStore, decision_id: str) -> dict[str, Any] | None:
    """Everything the log holds about one hook call, cards with their feedback."""
    with store.reading() as conn:
        decision = conn.execute(select(Decision).where(Decision.decision_id == decision_id)).mappings().first()
        if decision is None:
            return None
        orders = (
            conn.execute(
                select(DecisionOrder.order_ref, DecisionOrder.modality)
                .where(DecisionOrder.decision_id == decision_id)
                .order_by(DecisionOrder.id)
            )
            .mappings()
            .all()
        )
        evaluated = (
            conn.execute(
                select(Evaluated.rule_id, Evaluated.rule_version)
                .select_from(EVALUATIONS)
                .where(Decision.decision_id == decision_id)
                .order_by(Evaluated.rule_id)
            )
            .mappings()
            .all()
        )
        hits = _hits(conn, RuleHit.decision_id == decision_id)
        cards = (
            conn.execute(select(Card).where(Card.decision_id == decision_id).order_by(Card.rule_id, Card.uuid))
            .mappings()
            .all()
        )
        feedback = _feedback_by_card(conn, [card["uuid"] for card in cards])

    return {
        "decision": _jsonable(dict(decision)),
        "orders": [dict(order) for order in orders],
        "evaluated_rules": [dict(rule) for rule in evaluated],
        "fired": hits,
        "cards": [{**_card_dict(card), "feedback": feedback.get(card["uuid"], [])} for card in cards],
    }


def explain_card(store: AuditStore, card_uuid: str) -> dict[str, Any] | None:
    """Why a card was shown: its rule and version, the evidence and facts, its feedback."""
    with store.reading() as conn:
        card = (
            conn.execute(
                select(
                    Card,
                    Decision.created_at,
                    Decision.service_id,
                    Decision.hook,
                    Decision.rules_revision,
                )
                .join(Decision, Decision.decision_id == Card.decision_id)
                .where(Card.uuid == card_uuid)
            )
            .mappings()
            .first()
        )
        if card is None:
            return None
        hits = _hits(conn, RuleHit.card_uuid == card_uuid)
        version = conn.execute(
            select(Evaluated.rule_version)
            .select_from(EVALUATIONS)
            .where(Decision.decision_id == card["decision_id"], Evaluated.rule_id == card["rule_id"])
        ).scalar()
        feedback = _feedback_by_card(conn, [card_uuid]).get(card_uuid, [])

    own = [hit for hit in hits if hit["rule_id"] == card["rule_id"]]
    evidence = list(dict.fromkeys(ref for hit in hits for ref in hit["evidence"]))
    return {
        **_card_dict(card),
        "rule_version": own[0]["rule_version"] if own else version,
        "decision_id": card["decision_id"],
        "created_at": card["created_at"].isoformat(),
        "service_id": card["service_id"],
        "hook": card["hook"],
        "rules_revision": card["rules_revision"],
        "evidence": evidence,
        "facts": own[0]["facts"] if own else {},
        "hits": hits,
        "feedback": feedback,
    }


def list_decisions(
    store: AuditStore,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    service_id: str | None = None,
    rule_id: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest decisions first (at most ``limit``), optionally only one service's or only
    those where ``rule_id`` fired; each with its status, latency, rules fired and card count."""
    where = _period(since, until)
    if service_id is not None:
        where = and_(where, Decision.service_id == service_id)
    if rule_id is not None:
        where = and_(where, Decision.decision_id.in_(select(RuleHit.decision_id).where(RuleHit.rule_id == rule_id)))
    with store.reading() as conn:
        rows = [
            dict(row)
            for row in conn.execute(
                select(
                    Decision.decision_id, Decision.created_at, Decision.service_id, Decision.status, Decision.latency_ms
                )
                .where(where)
                .order_by(Decision.created_at.desc(), Decision.decision_id)
                .limit(limit)
            ).mappings()
        ]
        ids = [row["decision_id"] for row in rows]
        fired: dict[str, set[str]] = defaultdict(set)
        cards: dict[str, int] = {}
        if ids:
            for decision_id, fired_rule in conn.execute(
                select(RuleHit.decision_id, RuleHit.rule_id).where(RuleHit.decision_id.in_(ids))
            ):
                fired[decision_id].add(fired_rule)
            # .tuples().all(): a Result has keys(), so dict() would read it as a mapping and fail.
            cards = dict(
                conn.execute(
                    select(Card.decision_id, func.count()).where(Card.decision_id.in_(ids)).group_by(Card.decision_id)
                )
                .tuples()
                .all()
            )
    return [
        _jsonable({**row, "rules_fired": sorted(fired[row["decision_id"]]), "cards": cards.get(row["decision_id"], 0)})
        for row in rows
    ]


# -- helpers -----------------------------------------------------------------------------


def _period(
    since: datetime | None, until: datetime | None, service: str | None = None, policy_revision: str | None = None
) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if service is not None:
        conditions.append(Decision.service_id == service)
    if policy_revision is not None:
        conditions.append(Decision.policy_revision == policy_revision)
    if since is not None:
        conditions.append(Decision.created_at >= since)
    if until is not None:
        conditions.append(Decision.created_at < until)
    return and_(true(), *conditions)


def revision_summary(
    store: AuditStore, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per (rules revision, policy revision): decisions, cards shown and findings left out as
    repeats (no nagging twice), first and last use. How a policy change shows in the log;
    decisions logged before policies were recorded have policy revision None."""
    period = _period(since, until)
    keys = (Decision.rules_revision, Decision.policy_revision)
    with store.reading() as conn:
        rows = conn.execute(
            select(
                *keys,
                func.count().label("decisions"),
                func.min(Decision.created_at).label("first"),
                func.max(Decision.created_at).label("last"),
            )
            .where(period)
            .group_by(*keys)
        ).all()
        cards = {
            (r.rules_revision, r.policy_revision): r.n
            for r in conn.execute(
                select(*keys, func.count(Card.uuid).label("n"))
                .join(Card, Card.decision_id == Decision.decision_id)
                .where(period)
                .group_by(*keys)
            )
        }
        left_out: dict[tuple[str, str | None], int] = defaultdict(int)
        for r in conn.execute(select(*keys, Decision.suppressed).where(period, Decision.suppressed.is_not(None))):
            left_out[(r.rules_revision, r.policy_revision)] += len(r.suppressed or ())
    return [
        {
            "rules_revision": r.rules_revision,
            "policy_revision": r.policy_revision,
            "decisions": r.decisions,
            "cards": cards.get((r.rules_revision, r.policy_revision), 0),
            "findings_left_out": left_out.get((r.rules_revision, r.policy_revision), 0),
            "first": r.first.isoformat() if r.first else None,
            "last": r.last.isoformat() if r.last else None,
        }
        for r in sorted(rows, key=lambda r: r.last)
    ]


def _hits(conn: Connection, where: ColumnElement[bool]) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            RuleHit.rule_id,
            RuleHit.rule_version,
            RuleHit.severity,
            RuleHit.card_uuid,
            RuleHit.order_ref,
            RuleHit.evidence,
            RuleHit.facts,
        )
        .where(where)
        .order_by(RuleHit.id)
    ).mappings()
    return [dict(row) for row in rows]


def _feedback_by_card(conn: Connection, card_uuids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    if not card_uuids:
        return {}
    rows = conn.execute(
        select(Feedback).where(Feedback.card_uuid.in_(card_uuids)).order_by(Feedback.outcome_timestamp, Feedback.id)
    ).mappings()
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        reason = None
        if row["override_code"] is not None:
            reason = {
                "code": row["override_code"],
                "system": row["override_system"],
                "display": row["override_display"],
            }
        grouped[row["card_uuid"]].append(
            {
                "outcome": row["outcome"],
                "outcome_timestamp": row["outcome_timestamp"].isoformat(),
                "accepted_suggestions": row["accepted_suggestions"],
                "override_reason": reason,
                "user_comment": row["user_comment"],
                "received_at": row["received_at"].isoformat(),
                "known_card": bool(row["known_card"]),
            }
        )
    return dict(grouped)


def _card_dict(card: Any) -> dict[str, Any]:
    return {
        "uuid": card["uuid"],
        "rule_id": card["rule_id"],
        "indicator": card["indicator"],
        "summary": card["summary"],
        "suggestion_uuids": card["suggestion_uuids"],
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
