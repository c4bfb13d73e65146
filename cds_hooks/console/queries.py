"""The dashboard's questions that ``cryo-cds audit`` does not ask (evaluations per day, cards
per order, feedback received, the decision list), over the same period definition as
``audit.analytics`` (``since <= decision.created_at < until``, optional service), so the
per-rule numbers come from ``analytics`` itself and these never disagree with them."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select

from ..audit.analytics import _period
from ..audit.models import Card, Decision, DecisionOrder, Feedback, RuleHit
from ..audit.store import AuditStore

INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
PAGE_SIZE = 50


def services(store: AuditStore) -> list[str]:
    with store.reading() as conn:
        return sorted(conn.execute(select(Decision.service_id).distinct()).scalars())


def evaluations_per_day(
    store: AuditStore, since: datetime | None, until: datetime | None, service: str | None
) -> list[tuple[date, int]]:
    """Decisions per UTC day, every day of the period present (zeros included)."""
    with store.reading() as conn:
        stamps = conn.execute(select(Decision.created_at).where(_period(since, until, service))).scalars().all()
    counts = Counter(stamp.date() for stamp in stamps)
    if not counts and (since is None or until is None):
        return []
    first = since.date() if since is not None else min(counts)
    last = (until - timedelta(microseconds=1)).date() if until is not None else max(counts)
    days = [date.fromordinal(d) for d in range(first.toordinal(), last.toordinal() + 1)]
    return [(day, counts.get(day, 0)) for day in days]


def cards_per_order(
    store: AuditStore, since: datetime | None, until: datetime | None, service: str | None
) -> list[tuple[str, int]]:
    """How many orders got 0, 1, 2, ... 5+ cards (cards whose rule hits name the order)."""
    period = _period(since, until, service)
    with store.reading() as conn:
        orders = conn.execute(
            select(DecisionOrder.decision_id, DecisionOrder.order_ref)
            .join(Decision, Decision.decision_id == DecisionOrder.decision_id)
            .where(period)
        ).all()
        hits = conn.execute(
            select(RuleHit.decision_id, RuleHit.order_ref, func.count(RuleHit.card_uuid.distinct()))
            .join(Decision, Decision.decision_id == RuleHit.decision_id)
            .where(period)
            .group_by(RuleHit.decision_id, RuleHit.order_ref)
        ).all()
    per_order = {(d, o): int(n) for d, o, n in hits}
    buckets: Counter[str] = Counter()
    for decision_id, order_ref in orders:
        n = per_order.get((decision_id, order_ref), 0)
        buckets["5+" if n >= 5 else str(n)] += 1
    return [(label, buckets.get(label, 0)) for label in ("0", "1", "2", "3", "4", "5+")]


def feedback_received(
    store: AuditStore, since: datetime | None, until: datetime | None, service: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    """Feedback on the cards of the period's decisions (as ``analytics`` counts it), newest first."""
    with store.reading() as conn:
        rows = (
            conn.execute(
                select(
                    Feedback.received_at,
                    Feedback.service_id,
                    Card.rule_id,
                    Feedback.outcome,
                    Feedback.override_code,
                    Feedback.override_display,
                    Feedback.user_comment,
                    Card.decision_id,
                )
                .join(Card, Card.uuid == Feedback.card_uuid)
                .join(Decision, Decision.decision_id == Card.decision_id)
                .where(_period(since, until, service), Feedback.known_card.is_(True))
                .order_by(Feedback.received_at.desc(), Feedback.id.desc())
                .limit(limit)
            )
            .mappings()
            .all()
        )
    return [{**dict(r), "received_at": r["received_at"].isoformat(timespec="seconds")} for r in rows]


def decisions(
    store: AuditStore,
    since: datetime | None,
    until: datetime | None,
    service: str | None,
    query: str = "",
    page: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of decisions, newest first, with the rules that fired and the cards' top indicator.

    ``query`` matches a decision id or hook instance prefix, or a rule id that fired."""
    where = [_period(since, until, service)]
    text = query.strip()
    if text:
        fired = select(RuleHit.decision_id).where(RuleHit.rule_id == text.upper())
        where.append(
            or_(
                Decision.decision_id.startswith(text),
                Decision.hook_instance.startswith(text),
                Decision.decision_id.in_(fired),
            )
        )
    with store.reading() as conn:
        total = int(conn.execute(select(func.count()).select_from(Decision).where(*where)).scalar() or 0)
        rows = (
            conn.execute(
                select(
                    Decision.decision_id,
                    Decision.created_at,
                    Decision.service_id,
                    Decision.hook,
                    Decision.status,
                    Decision.latency_ms,
                )
                .where(*where)
                .order_by(Decision.created_at.desc(), Decision.decision_id)
                .limit(PAGE_SIZE)
                .offset(page * PAGE_SIZE)
            )
            .mappings()
            .all()
        )
        ids = [r["decision_id"] for r in rows]
        rules: dict[str, list[str]] = defaultdict(list)
        for decision_id, rule_id in conn.execute(
            select(RuleHit.decision_id, RuleHit.rule_id)
            .distinct()
            .where(RuleHit.decision_id.in_(ids))
            .order_by(RuleHit.rule_id)
        ):
            rules[decision_id].append(rule_id)
        cards: dict[str, list[str]] = defaultdict(list)
        for decision_id, indicator in conn.execute(
            select(Card.decision_id, Card.indicator).where(Card.decision_id.in_(ids))
        ):
            cards[decision_id].append(indicator)
    listed = []
    for r in rows:
        shown = cards.get(r["decision_id"], [])
        top = max(shown, key=lambda i: INDICATOR_RANK.get(i, -1)) if shown else None
        outcome = (
            f"HTTP {r['status']}"
            if r["status"] != 200
            else f"{len(shown)} card{'s' if len(shown) != 1 else ''}" + (f", {top}" if top else "")
        )
        listed.append(
            {
                **dict(r),
                "created_at": r["created_at"].isoformat(timespec="seconds"),
                "rules_fired": rules.get(r["decision_id"], []),
                "cards": len(shown),
                "top_indicator": top,
                "outcome": outcome,
            }
        )
    return listed, total
