"""Provider side: whether to admit a job sent over the overlay, and whether an on-chain job is
worth claiming. Pure functions; the answer is `Admitted`/`Claim` or a `Rejected` with a reason."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from node.types import Address, FetchTerms, Hash32


class RejectionCode(enum.StrEnum):
    """Why a provider declined a job; sent to the client so it can reassign or fix the request."""

    UNKNOWN_MODEL = "unknown_model"
    PRICE_TOO_LOW = "price_too_low"
    INPUT_TOO_LARGE = "input_too_large"
    QUEUE_FULL = "queue_full"
    DEADLINE_TOO_CLOSE = "deadline_too_close"
    ASSIGNED_ELSEWHERE = "assigned_elsewhere"
    DUPLICATE = "duplicate"
    HOLD_LIMIT = "hold_limit"


@dataclass(frozen=True, slots=True)
class Rejected:
    code: RejectionCode
    reason: str


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """What a provider accepts: its price floor per model (the models it serves), slots, queue bound."""

    price_floor_wei: Mapping[Hash32, int]
    slots: int = 1
    max_queue: int = 64
    max_input_bytes: int = 64 * 2**20
    # Models not served yet that a job may name, fetched over the overlay first; None: refused.
    fetch: FetchTerms | None = None

    def price_of(self, model_id: Hash32) -> int | None:
        """The price of a job for `model_id`: its floor when served, the first-job price of a
        model to fetch when fetching is on, else None (not taken)."""
        floor = self.price_floor_wei.get(model_id)
        if floor is not None or self.fetch is None:
            return floor
        return self.fetch.first_job_wei


@dataclass(frozen=True, slots=True)
class ProviderLoad:
    running: int = 0
    queued: int = 0


@dataclass(frozen=True, slots=True)
class JobOffer:
    """A job a client sends over the overlay, as admission sees it."""

    model_id: Hash32
    price_wei: int
    input_bytes: int
    # The most jobs it may wait behind (0: start now or not at all); None: the policy's bound.
    max_queue_position: int | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """Accepted: run at once (`queue_position` 0) or after `queue_position` queued jobs."""

    queue_position: int

    @property
    def starts_now(self) -> bool:
        return self.queue_position == 0


def admit(offer: JobOffer, load: ProviderLoad, policy: AdmissionPolicy) -> Admitted | Rejected:
    floor = policy.price_of(offer.model_id)
    if floor is None:
        return Rejected(
            RejectionCode.UNKNOWN_MODEL, f"this provider does not serve model {offer.model_id.hex()}"
        )
    if offer.price_wei < floor:
        return Rejected(
            RejectionCode.PRICE_TOO_LOW, f"the price {offer.price_wei} wei is below the floor {floor}"
        )
    if offer.input_bytes > policy.max_input_bytes:
        return Rejected(
            RejectionCode.INPUT_TOO_LARGE,
            f"the input is {offer.input_bytes} bytes; this provider takes at most {policy.max_input_bytes}",
        )
    if load.running < policy.slots and load.queued == 0:
        return Admitted(queue_position=0)
    if load.queued >= policy.max_queue:
        return Rejected(RejectionCode.QUEUE_FULL, f"the queue is full ({load.queued} jobs waiting)")
    position = load.queued + 1
    if offer.max_queue_position is not None and position > offer.max_queue_position:
        wanted = (
            "to start now"
            if offer.max_queue_position == 0
            else f"to wait behind at most {offer.max_queue_position} jobs"
        )
        return Rejected(
            RejectionCode.QUEUE_FULL,
            f"every slot is busy and the job would wait behind {position - 1} queued jobs; it asked {wanted}",
        )
    return Admitted(queue_position=position)


@dataclass(frozen=True, slots=True)
class OnChainJob:
    """A job requested on-chain (escrowed), as the claim decision sees it."""

    job_id: Hash32
    model_id: Hash32
    price_wei: int
    deadline: float  # unix seconds by which the result must be on-chain
    assigned_provider: Address | None = None


@dataclass(frozen=True, slots=True)
class ClaimContext:
    """The provider's situation when it considers claiming: clock, load, warm models, runtimes."""

    me: Address
    now: float
    policy: AdmissionPolicy
    load: ProviderLoad
    warm_models: frozenset[Hash32] = frozenset()
    # Measured seconds one job of a model takes once loaded; `default_runtime_s` where unmeasured.
    runtime_s: Mapping[Hash32, float] = field(default_factory=dict)
    default_runtime_s: float = 10.0
    cold_start_s: float = 30.0
    # Claiming and submitting are transactions: leave room for them to be mined.
    safety_margin_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Claim:
    """Worth claiming; the provider expects the result on-chain by `expected_done`."""

    expected_done: float


def should_claim(job: OnChainJob, ctx: ClaimContext) -> Claim | Rejected:
    if job.assigned_provider is not None and job.assigned_provider.lower() != ctx.me.lower():
        return Rejected(RejectionCode.ASSIGNED_ELSEWHERE, f"the job is reserved for {job.assigned_provider}")
    floor = ctx.policy.price_floor_wei.get(job.model_id)
    if floor is None:
        return Rejected(
            RejectionCode.UNKNOWN_MODEL, f"this provider does not serve model {job.model_id.hex()}"
        )
    if job.price_wei < floor:
        return Rejected(
            RejectionCode.PRICE_TOO_LOW, f"the price {job.price_wei} wei is below the floor {floor}"
        )
    if ctx.load.running >= ctx.policy.slots and ctx.load.queued >= ctx.policy.max_queue:
        return Rejected(RejectionCode.QUEUE_FULL, f"the queue is full ({ctx.load.queued} jobs waiting)")
    done = ctx.now + _expected_duration(job.model_id, ctx) + ctx.safety_margin_s
    if done > job.deadline:
        return Rejected(
            RejectionCode.DEADLINE_TOO_CLOSE,
            f"the result would be ready about {done - job.deadline:.0f} s after the deadline",
        )
    return Claim(expected_done=done)


def _expected_duration(model_id: Hash32, ctx: ClaimContext) -> float:
    runtime = ctx.runtime_s.get(model_id, ctx.default_runtime_s)
    # Jobs ahead run `slots` at a time; each wave is assumed to take about one runtime.
    waves_ahead = max(0, ctx.load.running + ctx.load.queued - ctx.policy.slots + 1)
    waves_ahead = -(-waves_ahead // ctx.policy.slots)
    load_time = 0.0 if model_id in ctx.warm_models else ctx.cold_start_s
    return waves_ahead * runtime + load_time + runtime
