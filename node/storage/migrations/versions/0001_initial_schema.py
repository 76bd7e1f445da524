"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:39:37.879154
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_chain_cursors")),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("payment", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("model_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("input_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("price_wei", sa.String(length=78), nullable=False),
        sa.Column("client", sa.String(length=42), nullable=True),
        sa.Column("deadline", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "providers",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("peer_id", sa.String(length=128), nullable=False),
        sa.Column("advert", sa.JSON(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("backoff_until", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_providers")),
    )
    op.create_table(
        "vouchers",
        sa.Column("client", sa.String(length=42), nullable=False),
        sa.Column("provider", sa.String(length=42), nullable=False),
        sa.Column("cumulative_wei", sa.String(length=78), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=65), nullable=False),
        sa.Column("redeemed_wei", sa.String(length=78), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client", "provider", name=op.f("pk_vouchers")),
    )
    op.create_table(
        "job_attempts",
        sa.Column("job_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=42), nullable=False),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_job_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "number", name=op.f("pk_job_attempts")),
    )
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_attempts_provider"), ["provider"], unique=False)

    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sa.UniqueConstraint("job_id", "seq", name=op.f("uq_job_events_job_id")),
    )
    op.create_table(
        "receipts",
        sa.Column("job_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("provider", sa.String(length=42), nullable=False),
        sa.Column("model_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("input_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("output_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("profile_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=65), nullable=False),
        sa.Column("stored_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_receipts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "provider", name=op.f("pk_receipts")),
    )


def downgrade() -> None:
    op.drop_table("receipts")
    op.drop_table("job_events")
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_attempts_provider"))

    op.drop_table("job_attempts")
    op.drop_table("vouchers")
    op.drop_table("providers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_updated_at"))
        batch_op.drop_index(batch_op.f("ix_jobs_state"))

    op.drop_table("jobs")
    op.drop_table("chain_cursors")
