"""A patient's decisions are indexed by patient, hook and time together, in place of the
patient alone: the order-sign look-up of earlier order-select answers (cds_hooks/nagging.py)
then reads the decisions of one hook in its window instead of the patient's whole history.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_decision_patient_hook_time", "decision", ["patient_hash", "hook", "created_at"])
    op.drop_index("ix_decision_patient_hash", table_name="decision")


def downgrade() -> None:
    op.create_index("ix_decision_patient_hash", "decision", ["patient_hash"])
    op.drop_index("ix_decision_patient_hook_time", table_name="decision")
