"""Audit tables (SQLAlchemy Core).

Core tables rather than ORM classes: nothing here is loaded into objects (every query and
write is a Core statement), and the ORM's mapper machinery would cost each serving process
about 11 MB. ``TableView`` keeps the readable ``Decision.created_at`` spelling.

An existing database is brought up to date by the Alembic migrations next to this module; a
fresh one is created from these classes (`metadata.create_all`), and tests check that both
give the same schema. Only portable types are used
(`JSON`, timezone-aware `DateTime`) so SQLite and PostgreSQL run the same code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

from .records import utc_for_log

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
        return None if value is None else utc_for_log(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TableView:
    """A table whose columns read as attributes (``Decision.created_at``); SQLAlchemy takes
    it wherever it takes the table (``select(Decision)``, ``insert(Card)``)."""

    def __init__(self, table: Table) -> None:
        self.__table__ = table
        self.__tablename__ = table.name

    def __clause_element__(self) -> Any:  # the Table (typed Any to fit SQLAlchemy's protocol)
        return self.__table__

    def __getattr__(self, name: str) -> Column[Any]:
        try:
            return self.__table__.c[name]
        except KeyError:
            raise AttributeError(f"table {self.__tablename__} has no column {name}") from None


def _required(name: str, kind: Any, **options: Any) -> Column[Any]:
    return Column(name, kind, nullable=False, **options)


def _optional(name: str, kind: Any, **options: Any) -> Column[Any]:
    return Column(name, kind, nullable=True, **options)


def _child_of_decision() -> Column[Any]:
    return Column("decision_id", ForeignKey("decision.decision_id", ondelete="CASCADE"), nullable=False, index=True)


def _serial_id() -> Column[Any]:
    return Column("id", BigId, primary_key=True, autoincrement=True)


# One hook call (OPA-style decision log entry).
Decision = TableView(
    Table(
        "decision",
        metadata,
        Column("decision_id", String(64), primary_key=True),
        _required("created_at", UTCDateTime(), index=True),
        _required("service_id", String(128)),
        _required("hook", String(128)),
        _required("hook_instance", String(128)),
        _required("patient_hash", String(64)),
        _required("rules_revision", String(128)),
        _required("evaluator", String(16)),
        _required("latency_ms", Float),
        _required("status", Integer),
        _required("data_gaps", JSON()),
        # Governance (revision 0005): the site policy in force, the de-identified facts the
        # rules ran on (what-if replay), and the findings not shown again (no nagging twice),
        # each with its reason. NULL on decisions logged before 0005.
        _optional("policy_revision", String(64)),
        _optional("facts", JSON(none_as_null=True)),
        _optional("suppressed", JSON(none_as_null=True)),
        # The rules evaluated for the call (revision 0006); NULL when none were.
        Column("evaluation_set", ForeignKey("evaluation_set.set_key"), nullable=True),
        # A patient's decisions of one hook in a time window (revision 0008): the order-sign
        # look-up of earlier answers (nagging.py) reads one range of it, not the patient's history.
        Index("ix_decision_patient_hook_time", "patient_hash", "hook", "created_at"),
    )
)

# A cryotherapy order seen in the decision, with its modality.
DecisionOrder = TableView(
    Table(
        "decision_order",
        metadata,
        _serial_id(),
        _child_of_decision(),
        _required("order_ref", String(256)),
        _required("modality", String(32)),
    )
)

# A rule that fired for one order, with evidence references and matched facts.
RuleHit = TableView(
    Table(
        "rule_hit",
        metadata,
        _serial_id(),
        _child_of_decision(),
        _required("rule_id", String(64), index=True),
        _required("rule_version", String(32)),
        _required("severity", String(16)),
        _optional("card_uuid", String(64), index=True),
        _required("order_ref", String(256)),
        _required("evidence", JSON()),
        _required("facts", JSON()),
    )
)

# A card returned to the EHR; feedback joins here by uuid. ``rule_ids`` (every rule the card
# carries) and ``override_reasons`` (code -> display it offered) are NULL before revision 0003.
Card = TableView(
    Table(
        "card",
        metadata,
        Column("uuid", String(64), primary_key=True),
        _child_of_decision(),
        _required("rule_id", String(64)),
        _required("indicator", String(16)),
        _required("summary", Text),
        _required("suggestion_uuids", JSON()),
        _optional("rule_ids", JSON()),
        _optional("override_reasons", JSON()),
    )
)

# A clinician's response to a card. No foreign key to ``card``: feedback for unknown or
# already purged cards is still kept (flagged by ``known_card``), and the two are purged on
# their own clocks. ``rule_ids``: every rule of the card the feedback is about.
Feedback = TableView(
    Table(
        "feedback",
        metadata,
        _serial_id(),
        _required("service_id", String(128)),
        _required("card_uuid", String(64), index=True),
        _optional("decision_id", String(64)),
        _optional("rule_id", String(64)),
        _optional("rule_ids", JSON()),
        _required("outcome", String(16)),
        _required("outcome_timestamp", UTCDateTime()),
        _required("accepted_suggestions", JSON()),
        _optional("override_code", String(128)),
        _optional("override_system", String(256)),
        _optional("override_display", Text),
        _optional("user_comment", Text),
        _required("received_at", UTCDateTime(), index=True),
        _required("known_card", Boolean),
        _required("dedupe_key", String(64), unique=True),
    )
)

# A distinct set of (rule id, version) pairs evaluated for a decision, fired or not: the
# denominator of fire rates. Nearly every decision of one rules revision evaluates the same
# set, so it is stored once under the SHA-256 of its sorted pairs (``set_key``) and decisions
# point at it, instead of each decision writing one row per rule. Sets hold no patient data
# and are never purged: a writer remembers the sets it has stored and does not write them again.
EvaluationSet = TableView(Table("evaluation_set", metadata, Column("set_key", String(64), primary_key=True)))

# One rule (with its version) of an evaluation set.
EvaluationSetMember = TableView(
    Table(
        "evaluation_set_member",
        metadata,
        Column("set_key", ForeignKey("evaluation_set.set_key", ondelete="CASCADE"), primary_key=True),
        Column("rule_id", String(64), primary_key=True),
        _required("rule_version", String(32)),
    )
)

# A client JWT's ``jti`` seen before its token expires (CDS Hooks §8 replay protection). Not
# audit data: it lives here because every worker and host already shares this database. The
# key is a SHA-256 of issuer and jti, so the row has a fixed width and holds no token
# material; rows are useless once ``expires_at`` (epoch seconds) has passed.
SeenJti = TableView(
    Table(
        "seen_jti",
        metadata,
        Column("key_hash", String(64), primary_key=True),
        _required("expires_at", Float, index=True),
    )
)

# Facts about the database itself, e.g. the fingerprint of the patient-hash key its rows were
# written with, so a second key is refused instead of silently splitting the log.
StoreMeta = TableView(
    Table(
        "store_meta",
        metadata,
        Column("name", String(64), primary_key=True),
        _required("value", String(256)),
    )
)


# SQLite's decision journal (audit/journal.py): decisions committed but not yet filed into the
# tables above, each as the INSERT parameters of its rows (JSON). Every transaction the store
# opens files them first; ``problem`` holds why the tables refused a row, which is then kept
# here. Unused on PostgreSQL, which writes each decision in one statement.
PendingDecision = TableView(
    Table(
        "pending_decision",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        _required("body", LargeBinary),
        _optional("problem", String(256)),
    )
)
