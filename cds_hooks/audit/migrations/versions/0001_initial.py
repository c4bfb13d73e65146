"""Initial audit schema: decisions, orders, rule hits and evaluations, cards, feedback.

Revision ID: 0001
Revises:
Create Date: 2026-05-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when models.py does.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "decision",
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("hook", sa.String(128), nullable=False),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("patient_hash", sa.String(64), nullable=False),
        sa.Column("rules_revision", sa.String(128), nullable=False),
        sa.Column("evaluator", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("data_gaps", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name="pk_decision"),
    )
    op.create_index("ix_decision_created_at", "decision", ["created_at"])
    op.create_index("ix_decision_patient_hash", "decision", ["patient_hash"])

    op.create_table(
        "decision_order",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("order_ref", sa.String(256), nullable=False),
        sa.Column("modality", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decision_order"),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.decision_id"],
            name="fk_decision_order_decision_id_decision",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_decision_order_decision_id", "decision_order", ["decision_id"])

    op.create_table(
        "rule_hit",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("card_uuid", sa.String(64), nullable=True),
        sa.Column("order_ref", sa.String(256), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rule_hit"),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.decision_id"],
            name="fk_rule_hit_decision_id_decision",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_rule_hit_decision_id", "rule_hit", ["decision_id"])
    op.create_index("ix_rule_hit_rule_id", "rule_hit", ["rule_id"])
    op.create_index("ix_rule_hit_card_uuid", "rule_hit", ["card_uuid"])

    op.create_table(
        "card",
        sa.Column("uuid", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("suggestion_uuids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name="pk_card"),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.decision_id"],
            name="fk_card_decision_id_decision",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_card_decision_id", "card", ["decision_id"])

    op.create_table(
        "feedback",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=True),
        sa.Column("rule_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_timestamp", _TS, nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_code", sa.String(128), nullable=True),
        sa.Column("override_system", sa.String(256), nullable=True),
        sa.Column("override_display", sa.Text(), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("known_card", sa.Boolean(), nullable=False),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("dedupe_key", name="uq_feedback_dedupe_key"),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_received_at", "feedback", ["received_at"])

    op.create_table(
        "rule_evaluation",
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "rule_id", name="pk_rule_evaluation"),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.decision_id"],
            name="fk_rule_evaluation_decision_id_decision",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_rule_evaluation_rule_id", "rule_evaluation", ["rule_id"])


def downgrade() -> None:
    for table in ("rule_evaluation", "feedback", "card", "rule_hit", "decision_order"):
        op.drop_table(table)
    op.drop_table("decision")
