"""Provider-side decisions: admitting jobs sent over the overlay and claiming on-chain jobs."""

from __future__ import annotations

import pytest

from node.scheduler import (
    AdmissionPolicy,
    Admitted,
    Claim,
    ClaimContext,
    JobOffer,
    OnChainJob,
    ProviderLoad,
    Rejected,
    RejectionCode,
    admit,
    should_claim,
)
from node.types import Address, FetchTerms, Hash32

MODEL = Hash32(b"\x01" * 32)
UNKNOWN = Hash32(b"\x09" * 32)
ME = Address("0x" + "Ab" * 20)
POLICY = AdmissionPolicy(price_floor_wei={MODEL: 100}, slots=2, max_queue=3, max_input_bytes=1_000)
NOW = 1_000.0


@pytest.mark.parametrize(
    ("offer", "load", "code"),
    [
        (JobOffer(UNKNOWN, 1_000, 10), ProviderLoad(), RejectionCode.UNKNOWN_MODEL),
        (JobOffer(MODEL, 99, 10), ProviderLoad(), RejectionCode.PRICE_TOO_LOW),
        (JobOffer(MODEL, 100, 1_001), ProviderLoad(), RejectionCode.INPUT_TOO_LARGE),
        (JobOffer(MODEL, 100, 10), ProviderLoad(running=2, queued=3), RejectionCode.QUEUE_FULL),
    ],
)
def test_cannot_admit_a_job_the_provider_should_decline(
    offer: JobOffer, load: ProviderLoad, code: RejectionCode
) -> None:
    decision = admit(offer, load, POLICY)
    assert isinstance(decision, Rejected)
    assert decision.code is code
    assert decision.reason


@pytest.mark.parametrize(
    ("load", "position"),
    [
        (ProviderLoad(), 0),
        (ProviderLoad(running=1), 0),
        (ProviderLoad(running=2), 1),
        (ProviderLoad(running=2, queued=2), 3),
        # A queued job goes first even when a slot just freed up.
        (ProviderLoad(running=1, queued=1), 2),
    ],
)
def test_can_admit_a_job_now_or_into_the_queue(load: ProviderLoad, position: int) -> None:
    decision = admit(JobOffer(MODEL, 100, 1_000), load, POLICY)
    assert decision == Admitted(queue_position=position)
    assert decision.starts_now is (position == 0)


def context(**changes: object) -> ClaimContext:
    base = {
        "me": ME,
        "now": NOW,
        "policy": POLICY,
        "load": ProviderLoad(),
        "warm_models": frozenset({MODEL}),
        "runtime_s": {MODEL: 5.0},
        "cold_start_s": 30.0,
        "safety_margin_s": 60.0,
    }
    base.update(changes)
    return ClaimContext(**base)  # type: ignore[arg-type]


def job(**changes: object) -> OnChainJob:
    base: dict[str, object] = {
        "job_id": Hash32(b"\x07" * 32),
        "model_id": MODEL,
        "price_wei": 100,
        "deadline": NOW + 600,
    }
    base.update(changes)
    return OnChainJob(**base)  # type: ignore[arg-type]


def test_can_claim_a_warm_job_with_time_to_spare() -> None:
    assert should_claim(job(), context()) == Claim(expected_done=NOW + 5 + 60)
    assert should_claim(job(assigned_provider=ME.lower()), context()) == Claim(expected_done=NOW + 65)


def test_claim_accounts_for_cold_start_and_queue() -> None:
    cold = should_claim(job(), context(warm_models=frozenset()))
    assert cold == Claim(expected_done=NOW + 30 + 5 + 60)
    busy = should_claim(job(), context(load=ProviderLoad(running=2, queued=2)))
    # Three jobs must finish before ours starts: two waves of two slots.
    assert busy == Claim(expected_done=NOW + 2 * 5 + 5 + 60)


@pytest.mark.parametrize(
    ("the_job", "ctx", "code"),
    [
        (job(assigned_provider=Address("0x" + "11" * 20)), context(), RejectionCode.ASSIGNED_ELSEWHERE),
        (job(model_id=UNKNOWN), context(), RejectionCode.UNKNOWN_MODEL),
        (job(price_wei=99), context(), RejectionCode.PRICE_TOO_LOW),
        (job(), context(load=ProviderLoad(running=2, queued=3)), RejectionCode.QUEUE_FULL),
        (job(deadline=NOW + 64), context(), RejectionCode.DEADLINE_TOO_CLOSE),
        (job(deadline=NOW + 80), context(warm_models=frozenset()), RejectionCode.DEADLINE_TOO_CLOSE),
    ],
)
def test_cannot_claim_a_job_not_worth_taking(
    the_job: OnChainJob, ctx: ClaimContext, code: RejectionCode
) -> None:
    decision = should_claim(the_job, ctx)
    assert isinstance(decision, Rejected)
    assert decision.code is code
    assert decision.reason


def test_can_admit_a_job_for_a_model_to_fetch_only_at_its_first_job_price() -> None:
    terms = FetchTerms(max_bytes=2**30, price_per_job_wei=100, cold_start_price_wei=900)
    lacking = Hash32(b"\x09" * 32)
    fetching = AdmissionPolicy(price_floor_wei={}, fetch=terms)
    assert isinstance(admit(JobOffer(lacking, 1000, 10), ProviderLoad(), fetching), Admitted)
    too_cheap = admit(JobOffer(lacking, 999, 10), ProviderLoad(), fetching)
    assert isinstance(too_cheap, Rejected)
    assert too_cheap.code is RejectionCode.PRICE_TOO_LOW  # the cold start is not waived
    # Turned off ([provider] fetch_models = false): a model it lacks is unknown, at any price.
    off = admit(JobOffer(lacking, 10**18, 10), ProviderLoad(), AdmissionPolicy(price_floor_wei={}))
    assert isinstance(off, Rejected)
    assert off.code is RejectionCode.UNKNOWN_MODEL


@pytest.mark.parametrize(
    ("load", "bound", "position"),
    [
        (ProviderLoad(running=1), 0, 0),  # a free slot: starts now whatever the bound
        (ProviderLoad(running=2), 1, 1),
        (ProviderLoad(running=2, queued=1), 2, 2),
        (ProviderLoad(running=2, queued=2), None, 3),  # no bound: the policy's queue only
    ],
)
def test_can_admit_a_job_within_the_queue_position_it_allows(
    load: ProviderLoad, bound: int | None, position: int
) -> None:
    decision = admit(JobOffer(MODEL, 100, 10, max_queue_position=bound), load, POLICY)
    assert decision == Admitted(queue_position=position)


@pytest.mark.parametrize(
    ("load", "bound", "said"),
    [
        (ProviderLoad(running=2), 0, "asked to start now"),
        # A queued job goes first even when a slot just freed up: a start-now job would wait.
        (ProviderLoad(running=1, queued=1), 0, "asked to start now"),
        (ProviderLoad(running=2, queued=1), 1, "asked to wait behind at most 1 jobs"),
    ],
)
def test_cannot_admit_a_job_that_would_wait_longer_than_it_allows(
    load: ProviderLoad, bound: int, said: str
) -> None:
    decision = admit(JobOffer(MODEL, 100, 10, max_queue_position=bound), load, POLICY)
    assert isinstance(decision, Rejected)
    assert decision.code is RejectionCode.QUEUE_FULL
    assert said in decision.reason
    # The price, the model and the input are checked first: a job refused for them says so.
    cheap = admit(JobOffer(MODEL, 99, 10, max_queue_position=bound), load, POLICY)
    assert isinstance(cheap, Rejected)
    assert cheap.code is RejectionCode.PRICE_TOO_LOW
