"""a receipt keeps the id it signs where that is not its job's

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 09:30:00

A provider signs a client's voucher job under the job's id in the voucher namespace (bound to the
client, apart from on-chain ids), while the client keeps the job under its own id. Receipts stored
before this revision sign their job's own id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signed_job_id", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_column("signed_job_id")
