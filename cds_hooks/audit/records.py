"""Plain records the pipeline hands to the audit store.

They carry no SQLAlchemy types so the steps before `audit` (cards, engine, routes) never
depend on the storage layer, and a record can be built and compared in a unit test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EVALUATORS = frozenset({"durable", "plain"})
OUTCOMES = frozenset({"accepted", "overridden"})


@dataclass(frozen=True)
class FiredRule:
    """One rule that matched one cryotherapy order, with what made it match."""

    rule_id: str
    rule_version: str
    severity: str
    card_uuid: str | None
    order_ref: str
    evidence: tuple[str, ...]  # FHIR references, e.g. "Condition/123"
    facts: Mapping[str, Any]  # the derived facts that matched (JSON-able)


@dataclass(frozen=True)
class CardRecord:
    """A card as returned to the EHR: enough to join feedback back to its rule."""

    uuid: str
    rule_id: str
    indicator: str
    summary: str
    suggestion_uuids: tuple[str, ...]
    rule_ids: tuple[str, ...] = ()  # every rule the card carries (its findings)
    override_reasons: tuple[tuple[str, str], ...] = ()  # (code, display) as offered


@dataclass(frozen=True)
class DecisionRecord:
    """One hook call. `patient_id` is raw here; the store keeps only its keyed hash."""

    decision_id: str
    created_at: datetime  # timezone-aware, UTC
    service_id: str
    hook: str
    hook_instance: str
    patient_id: str
    rules_revision: str
    evaluator: str  # "durable" | "plain"
    latency_ms: float
    orders: tuple[tuple[str, str], ...]  # (order reference, modality)
    fired: tuple[FiredRule, ...]
    cards: tuple[CardRecord, ...]
    data_gaps: tuple[str, ...]
    status: int = 200
    # -- governance (issue 14) --
    policy_revision: str = ""  # hash of the site policy in force ("" when none was recorded)
    facts: Mapping[str, Any] | None = None  # de-identified facts (cds_hooks.factrecord)
    suppressed: tuple[Mapping[str, Any], ...] = ()  # findings not shown again, and why (nagging)

    def check(self) -> None:
        """Raise ValueError if the record cannot be stored faithfully.

        Called by the store, not at construction: a record is built on the request path,
        where an audit problem must not become a clinician's error.
        """
        if self.evaluator not in EVALUATORS:
            raise ValueError(f"evaluator must be one of {sorted(EVALUATORS)}")
        _require_aware(self.created_at, "DecisionRecord.created_at")
        card_uuids = [card.uuid for card in self.cards]
        if len(set(card_uuids)) != len(card_uuids):
            raise ValueError(f"decision {self.decision_id} lists a card uuid twice")
        for hit in self.fired:
            if hit.card_uuid is not None and hit.card_uuid not in card_uuids:
                raise ValueError(
                    f"rule {hit.rule_id} points at card {hit.card_uuid}, which decision "
                    f"{self.decision_id} does not list; pass the card, or card_uuid=None "
                    "for a suppressed hit"
                )


@dataclass(frozen=True)
class FeedbackItem:
    """One entry of a CDS Hooks feedback POST (spec §7), already validated by the route."""

    card_uuid: str
    outcome: str  # "accepted" | "overridden"
    outcome_timestamp: datetime  # timezone-aware
    accepted_suggestions: tuple[str, ...]
    override_code: str | None
    override_system: str | None
    override_display: str | None
    user_comment: str | None

    def check(self) -> None:
        """Raise ValueError for an entry the store must not keep (called by the store)."""
        if self.outcome not in OUTCOMES:
            raise ValueError(f"feedback outcome must be one of {sorted(OUTCOMES)}")
        _require_aware(self.outcome_timestamp, "FeedbackItem.outcome_timestamp")

    def dedupe_key(self) -> str:
        """Identity of an entry, so a re-sent POST is stored once.

        Card, outcome, time, suggestions (as a set), reason code and comment. The display
        text is left out: it only describes the code and EHRs differ in sending it.
        """
        identity = [
            self.card_uuid,
            self.outcome,
            self.outcome_timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
            sorted(self.accepted_suggestions),
            self.override_system,
            self.override_code,
            self.user_comment,
        ]
        return hashlib.sha256(json.dumps(identity, separators=(",", ":")).encode()).hexdigest()


def utc_for_log(value: datetime) -> datetime:
    """A timestamp as the decision log stores it: aware only, in UTC (`models.UTCDateTime`,
    `sqlite_direct`, the PostgreSQL write's JSON)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "audit timestamps must be timezone-aware; use datetime.now(UTC) or attach tzinfo before recording"
        )
    return value.astimezone(UTC)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
