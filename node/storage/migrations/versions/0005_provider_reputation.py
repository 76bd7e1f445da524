"""providers' reputation as a client learnt it: spot checks, fraud records, exclusion

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_reputation",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("jobs_seen", sa.Integer(), nullable=False),
        sa.Column("checks_passed", sa.Integer(), nullable=False),
        sa.Column("checks_failed", sa.Integer(), nullable=False),
        sa.Column("fraud_records_seen", sa.Integer(), nullable=False),
        sa.Column("rechecks_due", sa.Integer(), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("excluded_reason", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_provider_reputation")),
    )


def downgrade() -> None:
    op.drop_table("provider_reputation")
