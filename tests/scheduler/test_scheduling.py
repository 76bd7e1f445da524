"""Client-side scheduling: filtering, scoring, the index against the scanning reference,
exploration, reassignment and back-off."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.scheduler import (
    CandidateIndex,
    Choice,
    DeviceOffer,
    JobRequirements,
    ModelMarket,
    ModelOffer,
    NoCandidate,
    ProviderCandidate,
    ProviderStats,
    backoff_until,
    filter_candidates,
    ineligibility,
    next_candidate,
    rank,
    score,
)
from node.types import Address, Hash32

GIB = 2**30
NOW = 1_000_000.0
MODEL = Hash32(b"\x01" * 32)
OTHER_MODEL = Hash32(b"\x02" * 32)


def provider(
    n: int,
    *,
    price: int = 100,
    warm: bool = False,
    kind: str = "cuda",
    memory: int = 24 * GIB,
    slots: int = 2,
    throughput: float = 10.0,
    stats: ProviderStats | None = None,
    models: tuple[Hash32, ...] = (MODEL,),
) -> ProviderCandidate:
    return ProviderCandidate(
        address=Address(f"0x{n:040x}"),
        peer_id=f"peer-{n}",
        models=tuple(ModelOffer(m, price, warm) for m in models),
        devices=(DeviceOffer(kind, "dev", memory),),
        free_slots=slots,
        throughput=throughput,
        stats=stats or ProviderStats(),
    )


REQ = JobRequirements(model_id=MODEL, max_price_wei=1_000, device_kind="cuda", min_memory_bytes=16 * GIB)


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        (provider(1, models=(OTHER_MODEL,)), "does not serve the model"),
        (provider(1, price=1_001), "above the budget"),
        (provider(1, memory=8 * GIB), "no cuda device with"),
        (provider(1, kind="cpu", memory=512 * GIB), "has no cuda device"),
        (provider(1, stats=ProviderStats(backoff_until=NOW + 1)), "backed off"),
    ],
)
def test_cannot_pick_an_ineligible_provider(candidate: ProviderCandidate, why: str) -> None:
    reason = ineligibility(candidate, REQ, now=NOW)
    assert reason is not None
    assert why in reason
    assert filter_candidates([candidate], REQ, now=NOW) == ()
    assert CandidateIndex.build([candidate]).ranked(REQ, now=NOW) == ()


def test_cannot_pick_a_provider_without_the_asked_for_device_kind_even_with_no_memory_asked() -> None:
    cpu_only = provider(1, kind="cpu", memory=0)
    requirements = JobRequirements(MODEL, 1_000, "cuda", 0)
    assert ineligibility(cpu_only, requirements, now=NOW) == "has no cuda device"
    assert CandidateIndex.build([cpu_only]).ranked(requirements, now=NOW) == ()
    assert CandidateIndex.build([cpu_only]).ranked(JobRequirements(MODEL, 1_000), now=NOW) == (cpu_only,)


def test_can_pick_a_busy_provider_whose_admission_queues_the_job() -> None:
    busy = provider(1, slots=0)
    assert ineligibility(busy, REQ, now=NOW) is None
    assert CandidateIndex.build([busy]).ranked(REQ, now=NOW) == (busy,)
    assert rank([busy, provider(2, slots=1)], REQ, now=NOW)[0] == provider(2, slots=1)


def test_can_pick_a_provider_whose_back_off_is_over_and_not_one_already_tried() -> None:
    candidate = provider(1, stats=ProviderStats(backoff_until=NOW))
    assert ineligibility(candidate, REQ, now=NOW) is None
    assert "already had a try" in (ineligibility(candidate, REQ, now=NOW, tried={candidate.address}) or "")


@pytest.mark.parametrize(
    ("better", "worse"),
    [
        (provider(1, price=50), provider(2, price=100)),
        (provider(1, stats=ProviderStats(latency_ms=10)), provider(2, stats=ProviderStats(latency_ms=500))),
        (
            provider(1, stats=ProviderStats(successes=50, failures=1)),
            provider(2, stats=ProviderStats(failures=5)),
        ),
        (provider(1, throughput=100), provider(2, throughput=10)),
        (provider(1, warm=True), provider(2, warm=False)),
        (provider(1, slots=4), provider(2, slots=1)),
    ],
)
def test_can_prefer_the_better_provider_on_each_component(
    better: ProviderCandidate, worse: ProviderCandidate
) -> None:
    market = ModelMarket.of([(better, better.models[0]), (worse, worse.models[0])])
    assert score(better, better.models[0], market) > score(worse, worse.models[0], market)
    assert rank([worse, better], REQ, now=NOW) == (better, worse)
    choice = CandidateIndex.build([worse, better]).choose(REQ, now=NOW, rng=random.Random(0), exploration=0)
    assert isinstance(choice, Choice)
    assert choice.candidate == better
    assert not choice.explored


def test_a_later_advert_of_the_same_provider_replaces_the_earlier() -> None:
    index = CandidateIndex.build([provider(1, price=10), provider(2, price=20), provider(1, price=30)])
    assert len(index) == 2
    assert index.ranked(REQ, now=NOW) == (provider(2, price=20), provider(1, price=30))


def test_ties_are_broken_by_address_so_ranking_is_deterministic() -> None:
    a, b = provider(2), provider(1)
    assert rank([a, b], REQ, now=NOW) == (b, a)
    assert CandidateIndex.build([a, b]).ranked(REQ, now=NOW) == (b, a)


def test_can_reassign_to_the_next_provider_minus_the_tried_ones() -> None:
    first, second, third = provider(1, price=10), provider(2, price=20), provider(3, price=30)
    index = CandidateIndex.build([third, first, second])
    rng = random.Random(0)
    tried: set[Address] = set()
    picked = []
    for _ in range(3):
        choice = index.choose(REQ, now=NOW, rng=rng, tried=tried, exploration=0)
        assert isinstance(choice, Choice)
        picked.append(choice.candidate)
        tried.add(choice.candidate.address)
    assert picked == [first, second, third]
    exhausted = index.choose(REQ, now=NOW, rng=rng, tried=tried, exploration=0)
    assert isinstance(exhausted, NoCandidate)
    assert "3 already had a try" in exhausted.reason
    ranked = rank([first, second, third], REQ, now=NOW)
    assert next_candidate(ranked, {first.address}) == second
    assert next_candidate(ranked, tried) is None


@pytest.mark.parametrize(
    ("requirements", "message"),
    [
        (JobRequirements(OTHER_MODEL, 1_000), "no provider serves model"),
        (JobRequirements(MODEL, 10), "asks more than the budget of 10 wei (cheapest: 100 wei)"),
        (JobRequirements(MODEL, 1_000, "cuda", 80 * GIB), "has a cuda device with"),
        (JobRequirements(MODEL, 1_000, "tpu"), "has a tpu device"),
    ],
)
def test_says_why_no_provider_can_take_a_job(requirements: JobRequirements, message: str) -> None:
    index = CandidateIndex.build([provider(1), provider(2, price=200)])
    choice = index.choose(requirements, now=NOW, rng=random.Random(0))
    assert isinstance(choice, NoCandidate)
    assert message in choice.reason


def test_says_how_many_providers_were_turned_away_for_what() -> None:
    backed_off = provider(1, stats=ProviderStats(backoff_until=NOW + 1))
    index = CandidateIndex.build([backed_off, provider(2, price=5_000), provider(3)])
    choice = index.choose(REQ, now=NOW, rng=random.Random(0), tried={provider(3).address})
    assert isinstance(choice, NoCandidate)
    assert "none of the 3 providers" in choice.reason
    assert "1 are backed off" in choice.reason
    assert "1 ask more than the budget" in choice.reason


def test_exploration_picks_other_eligible_providers_at_about_its_share() -> None:
    candidates = [provider(n, price=100 + n) for n in range(1, 41)] + [provider(99, price=5_000)]
    index = CandidateIndex.build(candidates)
    best = rank(candidates, REQ, now=NOW)[0]
    rng = random.Random(1234)
    choices = [index.choose(REQ, now=NOW, rng=rng, exploration=0.1) for _ in range(4_000)]
    assert all(isinstance(c, Choice) for c in choices)
    explored = [c for c in choices if isinstance(c, Choice) and c.explored]
    assert 300 <= len(explored) <= 500
    assert all(c.candidate.address != provider(99).address for c in explored)
    assert len(Counter(c.candidate.address for c in explored)) > 20
    assert all(c.candidate == best for c in choices if isinstance(c, Choice) and not c.explored)


def test_exploration_is_reproducible_from_the_seed() -> None:
    index = CandidateIndex.build([provider(n) for n in range(1, 30)])

    def run(seed: int) -> list[Address]:
        rng = random.Random(seed)
        return [
            c.candidate.address
            for c in (index.choose(REQ, now=NOW, rng=rng, exploration=0.5) for _ in range(50))
            if isinstance(c, Choice)
        ]

    assert run(5) == run(5)
    assert run(5) != run(6)


devices = st.sampled_from(["cuda", "cpu"])
candidate_strategy = st.builds(
    lambda n, models, price, kind, memory, slots, tput, succ, fail, lat, backoff, warm: ProviderCandidate(
        address=Address(f"0x{n:040x}"),
        peer_id=str(n),
        models=tuple(ModelOffer(Hash32(bytes([m]) * 32), price + m, warm) for m in models),
        devices=(DeviceOffer(kind, "d", memory * GIB),),
        free_slots=slots,
        throughput=tput,
        stats=ProviderStats(successes=succ, failures=fail, latency_ms=lat, backoff_until=backoff),
    ),
    st.integers(1, 10**6),
    st.sets(st.integers(1, 3), min_size=1, max_size=3),
    st.integers(0, 1_000),
    devices,
    st.integers(0, 80),
    st.integers(0, 3),
    st.floats(0, 100),
    st.integers(0, 20),
    st.integers(0, 20),
    st.none() | st.floats(0, 1_000),
    st.sampled_from([0.0, NOW - 1, NOW + 1]),
    st.booleans(),
)
requirement_strategy = st.builds(
    JobRequirements,
    st.integers(1, 4).map(lambda m: Hash32(bytes([m]) * 32)),
    st.integers(0, 1_200),
    st.none() | devices,
    st.integers(0, 80).map(lambda g: g * GIB),
)


@settings(max_examples=300, deadline=None)
@given(
    candidates=st.lists(candidate_strategy, max_size=30, unique_by=lambda c: c.address),
    requirements=requirement_strategy,
    tried_count=st.integers(0, 3),
)
def test_index_agrees_with_the_scanning_reference(
    candidates: list[ProviderCandidate], requirements: JobRequirements, tried_count: int
) -> None:
    tried = {c.address for c in candidates[:tried_count]}
    expected = rank(candidates, requirements, now=NOW, tried=tried)
    index = CandidateIndex.build(candidates)
    assert index.ranked(requirements, now=NOW, tried=tried) == expected
    assert index.ranked(requirements, now=NOW, tried=tried, limit=2) == expected[:2]
    choice = index.choose(requirements, now=NOW, rng=random.Random(0), tried=tried, exploration=0)
    if expected:
        assert isinstance(choice, Choice)
        assert choice.candidate == expected[0]
    else:
        assert isinstance(choice, NoCandidate)
        assert choice.reason
    explored = index.choose(requirements, now=NOW, rng=random.Random(1), tried=tried, exploration=1.0)
    if isinstance(explored, Choice):
        assert explored.candidate in expected


def test_back_off_grows_exponentially_up_to_the_cap() -> None:
    assert backoff_until(0, NOW) == NOW
    delays = [backoff_until(n, NOW, base_s=5, cap_s=600) - NOW for n in range(1, 10)]
    assert delays == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert backoff_until(10_000, NOW, cap_s=600) == NOW + 600


def test_back_off_jitter_is_bounded_and_seeded() -> None:
    jittered = [backoff_until(3, NOW, base_s=5, rng=random.Random(s)) - NOW for s in range(50)]
    assert all(20 <= d <= 22 for d in jittered)
    assert len(set(jittered)) > 1
    assert backoff_until(3, NOW, rng=random.Random(9)) == backoff_until(3, NOW, rng=random.Random(9))
