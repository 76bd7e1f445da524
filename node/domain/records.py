"""Frozen values the repositories take and return; no ORM row ever leaves `node.storage`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node.domain.state import JobEvent, JobState, JobStatus, PaymentPath, Role, State
from node.types import Address, Hash32, ResultReceipt, Voucher


@dataclass(frozen=True, slots=True)
class NewJob:
    """What is known about a job when it is first stored (client: submitted; provider: accepted)."""

    job_id: Hash32
    role: Role
    payment: PaymentPath
    model_id: Hash32
    input_hash: Hash32
    price_wei: int
    client: Address | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A stored job: its facts, where it stands, and the version a writer must name to move it."""

    job_id: Hash32
    model_id: Hash32
    input_hash: Hash32
    price_wei: int
    client: Address | None
    deadline: float | None
    status: JobStatus
    version: int
    created_at: float
    updated_at: float

    @property
    def state(self) -> State:
        return self.status.state

    @property
    def role(self) -> Role:
        return self.status.role


@dataclass(frozen=True, slots=True)
class JobEventRecord:
    """One entry of a job's append-only history."""

    job_id: Hash32
    seq: int
    event: JobEvent
    from_state: JobState
    to_state: JobState
    at: float


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    receipt: ResultReceipt
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedVoucher:
    voucher: Voucher
    signature: bytes


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    receipt: ResultReceipt
    signature: bytes
    stored_at: float


@dataclass(frozen=True, slots=True)
class StoredVoucher:
    """The latest voucher for a (client, provider) pair and how much of it has been redeemed."""

    voucher: Voucher
    signature: bytes
    redeemed_wei: int
    updated_at: float

    @property
    def unredeemed_wei(self) -> int:
        return self.voucher.cumulative_amount - self.redeemed_wei


@dataclass(frozen=True, slots=True)
class KnownProvider:
    """What this node has seen of a provider: its last advert and how it has served us."""

    address: Address
    peer_id: str
    advert: Mapping[str, Any]
    successes: int
    failures: int
    consecutive_failures: int
    latency_ms: float | None
    backoff_until: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class ProviderReputation:
    """What this client has learnt of a provider's results: jobs it verified from it, spot checks
    it passed and failed, valid fraud records naming it seen on the overlay, the re-checks those
    still ask for, and whether this client excluded it (a check it lost; kept across restarts)."""

    address: Address
    jobs_seen: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    fraud_records_seen: int = 0
    rechecks_due: int = 0
    excluded: bool = False
    excluded_reason: str = ""
