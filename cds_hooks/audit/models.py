"""Audit tables (SQLAlchemy 2.0 typed declarative).

An existing database is brought up to date by the Alembic migrations next to this module; a
fresh one is created from these classes (`metadata.create_all`), and tests check that both
give the same schema. Only portable types are used
(`JSON`, timezone-aware `DateTime`) so SQLite and PostgreSQL run the same code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Fixed constraint names, so the hand-written migration and these models name things alike.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and returns them aware.

    SQLite keeps no offset, so without this a non-UTC value would be compared as text in
    the wrong zone, and values would come back naive.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "audit timestamps must be timezone-aware; use datetime.now(UTC) or attach tzinfo before recording"
            )
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class Decision(Base):
    """One hook call (OPA-style decision log entry)."""

    __tablename__ = "decision"

    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    service_id: Mapped[str] = mapped_column(String(128))
    hook: Mapped[str] = mapped_column(String(128))
    hook_instance: Mapped[str] = mapped_column(String(128))
    patient_hash: Mapped[str] = mapped_column(String(64), index=True)
    rules_revision: Mapped[str] = mapped_column(String(128))
    evaluator: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    data_gaps: Mapped[list[str]]
    # Governance (revision 0005): the site policy in force, the de-identified facts the rules
    # ran on (what-if replay), and the findings not shown again (no nagging twice), each with
    # its reason. NULL on decisions logged before 0005.
    policy_revision: Mapped[str | None] = mapped_column(String(64))
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    suppressed: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    # The rules evaluated for the call (revision 0006); NULL when none were.
    evaluation_set: Mapped[str | None] = mapped_column(ForeignKey("evaluation_set.set_key"))


class DecisionOrder(Base):
    """A cryotherapy order seen in the decision, with its modality."""

    __tablename__ = "decision_order"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decision.decision_id", ondelete="CASCADE"), index=True)
    order_ref: Mapped[str] = mapped_column(String(256))
    modality: Mapped[str] = mapped_column(String(32))


class RuleHit(Base):
    """A rule that fired for one order, with evidence references and matched facts."""

    __tablename__ = "rule_hit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decision.decision_id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64), index=True)
    rule_version: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    card_uuid: Mapped[str | None] = mapped_column(String(64), index=True)
    order_ref: Mapped[str] = mapped_column(String(256))
    evidence: Mapped[list[str]]
    facts: Mapped[dict[str, Any]]


class Card(Base):
    """A card returned to the EHR; feedback joins here by uuid."""

    __tablename__ = "card"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decision.decision_id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    indicator: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    suggestion_uuids: Mapped[list[str]]
    # Every rule the card carries (its findings), and the override reasons it offered
    # (code -> display); NULL on cards logged before revision 0003.
    rule_ids: Mapped[list[str] | None]
    override_reasons: Mapped[dict[str, Any] | None]


class Feedback(Base):
    """A clinician's response to a card.

    No foreign key to `card`: feedback for unknown or already purged cards is still kept
    (flagged by `known_card`), and the two are purged on their own clocks.
    """

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(128))
    card_uuid: Mapped[str] = mapped_column(String(64), index=True)
    decision_id: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(64))
    rule_ids: Mapped[list[str] | None]  # every rule of the card the feedback is about
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_timestamp: Mapped[datetime]
    accepted_suggestions: Mapped[list[str]]
    override_code: Mapped[str | None] = mapped_column(String(128))
    override_system: Mapped[str | None] = mapped_column(String(256))
    override_display: Mapped[str | None] = mapped_column(Text)
    user_comment: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(index=True)
    known_card: Mapped[bool] = mapped_column(Boolean)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)


class EvaluationSet(Base):
    """A distinct set of (rule id, version) pairs evaluated for a decision, fired or not: the
    denominator of fire rates.

    Nearly every decision of one rules revision evaluates the same set, so it is stored once
    under the SHA-256 of its sorted pairs (`set_key`) and decisions point at it, instead of
    each decision writing one row per rule. Sets hold no patient data and are never purged:
    a writer remembers the sets it has stored and does not write them again.
    """

    __tablename__ = "evaluation_set"

    set_key: Mapped[str] = mapped_column(String(64), primary_key=True)


class EvaluationSetMember(Base):
    """One rule (with its version) of an evaluation set."""

    __tablename__ = "evaluation_set_member"

    set_key: Mapped[str] = mapped_column(ForeignKey("evaluation_set.set_key", ondelete="CASCADE"), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule_version: Mapped[str] = mapped_column(String(32))


class SeenJti(Base):
    """A client JWT's ``jti`` seen before its token expires (CDS Hooks §8 replay protection).

    Not audit data: it lives in this database because every worker and host already shares
    it. The key is a SHA-256 of issuer and jti, so the row has a fixed width and holds no
    token material; rows are useless once ``expires_at`` (epoch seconds) has passed.
    """

    __tablename__ = "seen_jti"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class StoreMeta(Base):
    """Facts about the database itself, e.g. the fingerprint of the patient-hash key its
    rows were written with, so a second key is refused instead of silently splitting the log."""

    __tablename__ = "store_meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
