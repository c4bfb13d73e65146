"""Cards carry several rules: the rules and the offered override reasons of each card, and
the rules feedback is attributed to.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("card") as batch:
        batch.add_column(sa.Column("rule_ids", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("override_reasons", sa.JSON(), nullable=True))
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("rule_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("rule_ids")
    with op.batch_alter_table("card") as batch:
        batch.drop_column("override_reasons")
        batch.drop_column("rule_ids")
