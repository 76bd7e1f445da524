"""The database schema as typed SQLAlchemy models. Only repositories touch these rows.

Wei amounts are stored as decimal strings: they reach 2**256 and neither SQLite's INTEGER nor a
portable NUMERIC holds that exactly. Hashes and signatures are raw bytes; times are unix seconds.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints keep the migrated schema identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ADDRESS = String(42)
WEI = String(78)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobRow(Base):
    __tablename__ = "jobs"

    job_id: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    payment: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    model_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    input_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    price_wei: Mapped[str] = mapped_column(WEI)
    client: Mapped[str | None] = mapped_column(ADDRESS)
    deadline: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    # Optimistic concurrency: every write is `UPDATE … WHERE version = <the version read>`.
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, index=True)


class JobAttemptRow(Base):
    __tablename__ = "job_attempts"

    job_id: Mapped[bytes] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(ADDRESS, index=True)
    paid: Mapped[bool] = mapped_column()
    outcome: Mapped[str | None] = mapped_column(String(16))
    price_wei: Mapped[str | None] = mapped_column(WEI)


class JobEventRow(Base):
    """Append-only history: one row per transition, `seq` equal to the job version it produced."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[bytes] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)


class ReceiptRow(Base):
    __tablename__ = "receipts"

    job_id: Mapped[bytes] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    provider: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    model_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    input_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    output_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    profile_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    stored_at: Mapped[float] = mapped_column(Float)
    # The id the receipt signs, where it is not the job's own (a client's voucher job: see
    # `node.chain.market.voucher_job_id`).
    signed_job_id: Mapped[bytes | None] = mapped_column(LargeBinary(32))


class VoucherRow(Base):
    """The latest cumulative voucher per (client, provider), and how much of it was redeemed."""

    __tablename__ = "vouchers"

    client: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    provider: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    cumulative_wei: Mapped[str] = mapped_column(WEI)
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    redeemed_wei: Mapped[str] = mapped_column(WEI)
    updated_at: Mapped[float] = mapped_column(Float)


class ProviderRow(Base):
    __tablename__ = "providers"

    address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    peer_id: Mapped[str] = mapped_column(String(128))
    advert: Mapped[dict[str, Any]] = mapped_column(JSON)
    successes: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    consecutive_failures: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    backoff_until: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


class ReputationRow(Base):
    __tablename__ = "provider_reputation"

    address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    jobs_seen: Mapped[int] = mapped_column(Integer)
    checks_passed: Mapped[int] = mapped_column(Integer)
    checks_failed: Mapped[int] = mapped_column(Integer)
    fraud_records_seen: Mapped[int] = mapped_column(Integer)
    rechecks_due: Mapped[int] = mapped_column(Integer)
    excluded: Mapped[bool] = mapped_column(Boolean)
    excluded_reason: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class ChainCursorRow(Base):
    __tablename__ = "chain_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


# A row of any Core select.
AnyRow = Row[*tuple[Any, ...]]

# The tables themselves, for Core statements on the job path (see `node.storage.session`).
JOBS = cast(Table, JobRow.__table__)
JOB_ATTEMPTS = cast(Table, JobAttemptRow.__table__)
JOB_EVENTS = cast(Table, JobEventRow.__table__)
RECEIPTS = cast(Table, ReceiptRow.__table__)
VOUCHERS = cast(Table, VoucherRow.__table__)
PROVIDERS = cast(Table, ProviderRow.__table__)
