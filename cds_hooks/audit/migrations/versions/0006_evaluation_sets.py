"""Evaluation sets: the rules evaluated for a decision are stored once per distinct set of
(rule id, version) pairs, and each decision points at its set, instead of one
rule_evaluation row per rule and decision (about 50 rows per hook call).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500  # decisions converted per round trip

_decision = sa.table("decision", sa.column("decision_id", sa.String), sa.column("evaluation_set", sa.String))
_evaluation = sa.table(
    "rule_evaluation", sa.column("decision_id", sa.String), sa.column("rule_id"), sa.column("rule_version")
)
_set = sa.table("evaluation_set", sa.column("set_key", sa.String))
_member = sa.table("evaluation_set_member", sa.column("set_key"), sa.column("rule_id"), sa.column("rule_version"))


def set_key(pairs: Sequence[tuple[str, str]]) -> str:
    """Frozen copy of cds_hooks.audit.store.evaluation_set_key (the keys must agree)."""
    canonical = json.dumps(sorted([rule_id, version] for rule_id, version in pairs), separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def upgrade() -> None:
    op.create_table(
        "evaluation_set",
        sa.Column("set_key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("set_key", name="pk_evaluation_set"),
    )
    op.create_table(
        "evaluation_set_member",
        sa.Column("set_key", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("set_key", "rule_id", name="pk_evaluation_set_member"),
        sa.ForeignKeyConstraint(
            ["set_key"],
            ["evaluation_set.set_key"],
            name="fk_evaluation_set_member_set_key_evaluation_set",
            ondelete="CASCADE",
        ),
    )
    column = sa.Column("evaluation_set", sa.String(64), nullable=True)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a constraint only inline with a new column (unnamed); rebuilding the
        # decision table instead would fire its ON DELETE CASCADEs.
        column.append_foreign_key(sa.ForeignKey("evaluation_set.set_key"))
        op.add_column("decision", column, inline_references=True)
    else:
        op.add_column("decision", column)
        op.create_foreign_key(
            "fk_decision_evaluation_set_evaluation_set", "decision", "evaluation_set", ["evaluation_set"], ["set_key"]
        )
    _fill_sets(op.get_bind())
    op.drop_index("ix_rule_evaluation_rule_id", table_name="rule_evaluation")
    op.drop_table("rule_evaluation")


def _fill_sets(conn: sa.Connection) -> None:
    """Point every decision with evaluations at its set, creating each set once."""
    known: set[str] = set()
    last = ""
    while True:
        ids = (
            conn.execute(
                sa.select(_evaluation.c.decision_id)
                .distinct()
                .where(_evaluation.c.decision_id > last)
                .order_by(_evaluation.c.decision_id)
                .limit(_BATCH)
            )
            .scalars()
            .all()
        )
        if not ids:
            return
        last = ids[-1]
        pairs: dict[str, list[tuple[str, str]]] = {}
        for decision_id, rule_id, version in conn.execute(
            sa.select(_evaluation.c.decision_id, _evaluation.c.rule_id, _evaluation.c.rule_version).where(
                _evaluation.c.decision_id.in_(ids)
            )
        ):
            pairs.setdefault(decision_id, []).append((rule_id, version))
        keys = {decision_id: set_key(members) for decision_id, members in pairs.items()}
        for decision_id, key in keys.items():
            if key not in known:
                conn.execute(sa.insert(_set).values(set_key=key))
                conn.execute(
                    sa.insert(_member),
                    [{"set_key": key, "rule_id": r, "rule_version": v} for r, v in pairs[decision_id]],
                )
                known.add(key)
        conn.execute(
            sa.update(_decision).where(_decision.c.decision_id == sa.bindparam("did")),
            [{"did": decision_id, "evaluation_set": key} for decision_id, key in keys.items()],
        )


def downgrade() -> None:
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
    op.execute(
        "INSERT INTO rule_evaluation (decision_id, rule_id, rule_version) "
        "SELECT d.decision_id, m.rule_id, m.rule_version FROM decision d "
        "JOIN evaluation_set_member m ON m.set_key = d.evaluation_set"
    )
    # SQLite drops a referencing column only by rebuilding the table (run it by hand, through
    # `alembic downgrade`, whose connection leaves foreign keys off as earlier downgrades need).
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("evaluation_set")
    op.drop_table("evaluation_set_member")
    op.drop_table("evaluation_set")
