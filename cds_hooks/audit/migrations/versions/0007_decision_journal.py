"""The decision journal: on SQLite a hook call appends its decision as one row, filed into the
decision tables in batches (cds_hooks/audit/journal.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_decision",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("problem", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_pending_decision"),
    )


def downgrade() -> None:
    # Pending decisions are filed by the store before any migration runs (every transaction
    # it opens files them first); a row still here is one the tables refused.
    op.drop_table("pending_decision")
