"""No nagging twice: a warning or info finding a clinician already answered on order-select
is not shown again at order-sign for the same draft order.

Why: order-sign re-checks the orders just checked at order-select; showing the same card
again after the clinician accepted it, or overrode it with a reason, trains people to click
cards away. Critical findings come back unless the site policy says otherwise
(``repeat_critical_cards: false``). A finding left out is still logged (a rule hit with no
card, and the decision's ``suppressed`` entry saying which answer it repeats), so fire rates
and the audit trail do not change.

"The same draft order" is the same order reference in a call for the same patient (compared
by the log's keyed patient hash); "the same finding" is the same rule at the same severity.
The window (``repeat_card_window_hours``, default 24 h) counts from the order-select call.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .audit.sqlite_direct import bound
from .audit.store import AuditStore
from .cards.findings import Finding
from .hooks import ORDER_SELECT

log = logging.getLogger(__name__)

WINDOW_PARAMETER = "repeat_card_window_hours"
DEFAULT_WINDOW_HOURS = 24.0
# The look-up runs before the decision is written; with a hung database the write already
# waits out the store's timeout, so the look-up gets a much shorter budget of its own.
LOOKUP_TIMEOUT_S = 0.5

# SQLite through the driver: the rows of `_core_query` (tests compare the two). CROSS JOIN
# fixes the join order: the patient's decisions, their cards, then only the answered cards'
# hits. SQLite's own choice read every hit of every card before asking for an answer: 24 ms
# against 6 ms for a patient with 3,000 decisions in the window (a test patient on a busy day).
_ANSWERS_SQL = """
SELECT rule_hit.order_ref, rule_hit.rule_id, rule_hit.severity, feedback.outcome, feedback.override_code,
       card.uuid, decision.decision_id
FROM decision
CROSS JOIN card ON card.decision_id = decision.decision_id
CROSS JOIN feedback ON feedback.card_uuid = card.uuid AND feedback.known_card = 1
CROSS JOIN rule_hit ON rule_hit.card_uuid = card.uuid
WHERE decision.patient_hash = ? AND decision.hook = ? AND decision.created_at >= ?
  AND rule_hit.order_ref IN ({refs})
  AND (feedback.outcome = 'accepted' OR (feedback.outcome = 'overridden' AND feedback.override_code IS NOT NULL))
ORDER BY feedback.received_at DESC, feedback.id DESC, rule_hit.id
"""


@dataclass(frozen=True)
class Answer:
    """A clinician's answer on order-select to a card that carried one rule's finding."""

    order_ref: str
    rule_id: str
    severity: str
    outcome: str  # "accepted" | "overridden"
    reason_code: str | None
    card_uuid: str
    decision_id: str


AnswerKey = tuple[str, str, str]  # (order ref, rule id, severity)


class FeedbackMemory:
    """Looks up, in the decision log, what was answered on order-select for a patient's orders."""

    def __init__(self, store: AuditStore, timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        self._store = store
        self._timeout = min(timeout_s, store.timeout_s)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():  # a forked worker starts afresh
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="feedback-lookup")
                self._pid = os.getpid()
            return self._executor

    def answered(self, patient_id: str, order_refs: Sequence[str], since: datetime) -> dict[AnswerKey, Answer]:
        """Answers given to order-select cards issued since ``since``; empty (cards shown as
        usual) when the log cannot be read in time: a missed suppression only repeats a card."""
        if not patient_id or not order_refs:
            return {}
        try:
            future = self._pool().submit(self._query, self._store.hash_patient(patient_id), list(order_refs), since)
            rows = future.result(timeout=self._timeout)
        except Exception as exc:
            log.warning("feedback lookup failed (%s); order-sign cards are shown in full", type(exc).__name__)
            return {}
        found: dict[AnswerKey, Answer] = {}
        for order_ref, rule_id, severity, outcome, override_code, uuid, decision_id in rows:
            answer = Answer(order_ref, rule_id, severity, outcome, override_code, uuid, decision_id)
            found.setdefault((order_ref, rule_id, severity), answer)
        return found

    def _query(self, patient_hash: str, order_refs: list[str], since: datetime) -> list[tuple[Any, ...]]:
        """(order ref, rule id, severity, outcome, override code, card uuid, decision id) rows,
        the latest answer first (of one feedback post, the last item; then the hits in the
        order they were logged). On SQLite the decision journal is not filed first: an
        answered card is always filed already (feedback files the journal before it looks
        its card up), so the look-up takes no write lock on the hook call's path."""
        if not self._store.writes_directly:
            return self._core_query(patient_hash, order_refs, since)
        sql = _ANSWERS_SQL.format(refs=", ".join("?" * len(order_refs)))
        params = (patient_hash, ORDER_SELECT, bound("decision", "created_at", since), *order_refs)
        with self._store.direct_reading(filed_only=True) as driver:
            return [tuple(row) for row in driver.execute(sql, params)]

    def _core_query(self, patient_hash: str, order_refs: list[str], since: datetime) -> list[tuple[Any, ...]]:
        from sqlalchemy import and_, or_, select

        from .audit.models import Card, Decision, Feedback, RuleHit

        query = (
            select(
                RuleHit.order_ref,
                RuleHit.rule_id,
                RuleHit.severity,
                Feedback.outcome,
                Feedback.override_code,
                Card.uuid,
                Decision.decision_id,
            )
            .join(Card, Card.uuid == RuleHit.card_uuid)
            .join(Decision, Decision.decision_id == Card.decision_id)
            .join(Feedback, and_(Feedback.card_uuid == Card.uuid, Feedback.known_card.is_(True)))
            .where(
                Decision.patient_hash == patient_hash,
                Decision.hook == ORDER_SELECT,
                Decision.created_at >= since,
                RuleHit.order_ref.in_(order_refs),
                or_(
                    Feedback.outcome == "accepted",
                    and_(Feedback.outcome == "overridden", Feedback.override_code.is_not(None)),
                ),
            )
            .order_by(Feedback.received_at.desc(), Feedback.id.desc(), RuleHit.id)
        )
        with self._store.reading() as conn:
            return [tuple(row) for row in conn.execute(query)]


def window(parameters: Mapping[str, Any]) -> timedelta:
    return timedelta(hours=float(parameters.get(WINDOW_PARAMETER, DEFAULT_WINDOW_HOURS)))


def split_repeats(
    findings: Sequence[Finding], answered: Mapping[AnswerKey, Answer], *, repeat_critical: bool
) -> tuple[list[Finding], list[tuple[Finding, list[Answer]]]]:
    """(findings to show, findings already answered with the answers they repeat). A finding
    is a repeat when every rule hit in it was answered at the same severity on that order."""
    shown: list[Finding] = []
    repeats: list[tuple[Finding, list[Answer]]] = []
    for finding in findings:
        if finding.severity == "critical" and repeat_critical:
            shown.append(finding)
            continue
        answers = [answered.get((finding.order_ref, rule.id, severity)) for rule, severity, _ in finding.hits]
        if answers and all(a is not None for a in answers):
            repeats.append((finding, [a for a in answers if a is not None]))
        else:
            shown.append(finding)
    return shown, repeats


def suppression_entry(finding: Finding, answers: Sequence[Answer], window_hours: float) -> dict[str, Any]:
    """What the decision log keeps about one finding left out, and why."""
    first = answers[0]
    how = "accepted" if first.outcome == "accepted" else f"overridden with reason {first.reason_code}"
    return {
        "finding": finding.key,
        "rules": sorted({rule.id for rule, _, _ in finding.hits}),
        "severity": finding.severity,
        "order_ref": finding.order_ref,
        "reason": f"already answered on order-select ({how}) within {window_hours:g} h",
        "answered_card": first.card_uuid,
        "answered_decision": first.decision_id,
    }


__all__ = ["Answer", "FeedbackMemory", "split_repeats", "suppression_entry", "window"]
