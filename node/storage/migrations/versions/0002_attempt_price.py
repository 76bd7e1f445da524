"""each attempt keeps its price

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 06:00:00

An attempt's price (the matched provider's advertised price) lived only in the client's memory,
so a restarted client paid the provider's current price, or the job's whole budget. Attempts
stored before this revision read back without a price and keep the old fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_wei", sa.String(length=78), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_column("price_wei")
