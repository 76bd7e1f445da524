"""Live load: expected completion from adverts, queue positions and observed latencies, and the
randomized pick among the good providers (cheapest first, power of d choices, exploration)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from node.scheduler import (
    DeviceOffer,
    LoadSignals,
    ModelOffer,
    Option,
    ProviderCandidate,
    estimate,
    market_priors,
    observe,
    place,
)
from node.types import Address, Hash32

MODEL = Hash32(b"\x01" * 32)
NOW = 1_000_000.0


def option(
    n: int, expected_ms: float, *, price: int = 100, explorable: bool = False, rate: float = 1.0
) -> Option:
    offer = ModelOffer(MODEL, price)
    candidate = ProviderCandidate(
        address=Address(f"0x{n:040x}"),
        peer_id=f"peer-{n}",
        models=(offer,),
        devices=(DeviceOffer("cuda", "dev", 2**34),),
        free_slots=1,
        throughput=1.0,
    )
    return Option(candidate, offer, expected_ms, explorable, rate)


def test_can_expect_a_free_provider_to_start_at_once_and_a_full_one_to_queue() -> None:
    free = LoadSignals(advertised_free=2, service_ms=200.0, service_seen_at=NOW)
    assert estimate(free, NOW, prior_ms=50).expected_ms == 200.0
    # The advert says three jobs wait: the next is the fourth in line.
    queueing = LoadSignals(advertised_free=0, advertised_queued=3, service_ms=200.0, service_seen_at=NOW)
    assert estimate(queueing, NOW, prior_ms=50).positions == 4
    # This client sent three jobs since the advert of two free slots: the next waits behind one.
    full = LoadSignals(
        advertised_free=2, advertised_at=NOW - 1, sent_since_advert=3, service_ms=200.0, service_seen_at=NOW
    )
    expected = estimate(full, NOW, prior_ms=50)
    assert expected.positions == 2
    assert expected.expected_ms == 200 + 2 * 200  # no drain observed: one job at a time


def test_can_let_a_reported_queue_position_drain_with_time() -> None:
    queued = LoadSignals(
        advertised_free=4,
        slots_seen=2,
        advertised_drain_ms=50.0,
        queue_seen=5,
        queue_seen_at=NOW,
        service_ms=100.0,
        service_seen_at=NOW,
    )
    assert estimate(queued, NOW, prior_ms=100).positions == 5
    assert estimate(queued, NOW + 0.1, prior_ms=100).positions == pytest.approx(3)
    assert estimate(queued, NOW + 1, prior_ms=100).positions == 0


def test_cannot_believe_an_advertised_run_time_over_an_observed_one_or_below_the_fastest_seen() -> None:
    claims_1ms = LoadSignals(advertised_free=64, advertised_ms=1.0)
    assert estimate(claims_1ms, NOW, prior_ms=300, floor_ms=120).service_ms == 120
    assert estimate(claims_1ms, NOW, prior_ms=300).service_ms == 1  # nothing observed anywhere yet
    caught = LoadSignals(advertised_free=64, advertised_ms=1.0, service_ms=900.0, service_seen_at=NOW)
    assert estimate(caught, NOW, prior_ms=300, floor_ms=120).service_ms == 900
    new = LoadSignals(advertised_free=1)
    assert estimate(new, NOW, prior_ms=300, floor_ms=120).service_ms == 300  # the market's median


def test_can_let_an_observed_run_time_fade_back_to_the_unobserved_guess() -> None:
    unlucky = LoadSignals(advertised_free=1, service_ms=4000.0, service_seen_at=NOW)
    assert estimate(unlucky, NOW, prior_ms=1000).service_ms == 4000
    assert estimate(unlucky, NOW + 300, prior_ms=1000).service_ms == pytest.approx(2500)
    assert estimate(unlucky, NOW + 3000, prior_ms=1000).service_ms == pytest.approx(1000, abs=5)


def test_can_learn_run_time_from_jobs_that_started_at_once_and_drain_from_queued_ones() -> None:
    fresh = LoadSignals(advertised_free=1)
    assert observe(fresh, 400.0, 0, now=NOW).service_ms == 400.0
    # Queued before a run time was seen: what the job was sent on stands where it fits.
    assert observe(fresh, 400.0, 3, assumed_ms=150.0, now=NOW).service_ms == 150.0
    assert observe(fresh, 400.0, 3, assumed_ms=10.0, now=NOW).service_ms == 100.0  # 400 / (1 + 3)
    assert observe(fresh, 400.0, 3, assumed_ms=900.0, now=NOW).service_ms == 400.0
    known = LoadSignals(advertised_free=1, service_ms=100.0, service_seen_at=NOW)
    queued = observe(known, 400.0, 3, now=NOW)
    assert (queued.service_ms, queued.drain_ms) == (100.0, 100.0)
    assert observe(known, 200.0, None, now=NOW).service_ms == pytest.approx(125.0)
    # A drain observed slower than claimed overrides the claim.
    claims = replace(queued, advertised_drain_ms=10.0, slots_seen=64)
    assert estimate(claims, NOW, prior_ms=100).drain_ms == 100.0


def test_can_take_priors_from_the_market_median_and_the_fastest_observed() -> None:
    signals = [LoadSignals(0, service_ms=ms, service_seen_at=NOW) for ms in (100.0, 300.0, 900.0)] + [
        LoadSignals(0)
    ]
    assert market_priors(signals) == (300.0, 100.0)
    claims = [LoadSignals(0, advertised_ms=40.0), LoadSignals(0, advertised_ms=60.0)]
    assert market_priors(claims) == (50.0, 0.0)
    assert market_priors([LoadSignals(0)]) == (100.0, 0.0)


def test_can_prefer_a_cheaper_provider_that_finishes_as_soon() -> None:
    rng = random.Random(3)
    cheap, dear = option(1, 1000.0, price=90), option(2, 1000.0, price=100)
    assert all(place([dear, cheap], rng).option is cheap for _ in range(200))
    # Within the slack it is still "as soon": a little slower but cheaper wins.
    slightly_slower = option(3, 1100.0, price=90)
    assert all(place([dear, slightly_slower], rng).option is slightly_slower for _ in range(200))
    # Much slower: the dearer one that finishes far sooner wins.
    far_slower = option(4, 3000.0, price=10)
    assert all(place([dear, far_slower], rng).option is dear for _ in range(200))


def test_can_spread_equal_choices_at_random_and_rarely_pick_a_far_slower_one() -> None:
    rng = random.Random(11)
    options = [option(n, 1000.0) for n in range(10)] + [option(99, 5000.0)]
    picks = Counter(place(options, rng).option.candidate.address for _ in range(5000))
    # Only when it is sampled twice: (1/11)^2 of the decisions.
    assert picks[option(99, 0).candidate.address] < 0.02 * 5000
    del picks[option(99, 0).candidate.address]
    assert len(picks) == 10
    assert max(picks.values()) < 1.25 * min(picks.values()), picks


def test_can_sample_by_rate_and_take_the_sooner_of_the_sample() -> None:
    rng = random.Random(5)
    sooner, later = option(1, 1000.0), option(2, 1500.0)
    assert all(place([later, sooner], rng).option is sooner for _ in range(200))  # both sampled
    # A close call is no call: estimates are noisy, and the one that lost would never be seen again.
    close = option(4, 1200.0)
    picks = Counter(place([close, sooner], rng).option for _ in range(1000))
    assert 400 <= picks[close] <= 600, picks
    # Equally soon: the first drawn wins, and one that finishes nine times the jobs is drawn
    # first about nine times as often (never more than `RATE_CAP` times the median, though).
    fast = option(3, 1000.0, rate=9.0)
    others = [option(n, 1000.0) for n in range(10, 19)]
    picks = Counter(place([fast, *others], rng).option for _ in range(3000))
    assert picks[fast] > 3 * max(picks[o] for o in others), picks


def test_can_explore_providers_never_observed_and_only_at_the_asked_share() -> None:
    rng = random.Random(9)
    known = option(1, 100.0)
    # Never observed, so expected at the market's median run time: slower than the best now.
    new = option(2, 180.0, explorable=True, rate=0.1)
    placed = [place([known, new], rng, exploration=0.1) for _ in range(4000)]
    explored = [p for p in placed if p.explored]
    assert 300 <= len(explored) <= 500
    assert all(p.option is new for p in explored)
    assert sum(p.option is new for p in placed if not p.explored) < 0.02 * len(placed)
    assert not any(place([known], rng, exploration=1.0).explored for _ in range(50))


def test_cannot_explore_a_provider_whose_claim_is_far_slower_than_the_best_option() -> None:
    rng = random.Random(9)
    slow = option(2, 10_000.0, explorable=True, rate=0.1)
    # Even if its claim were true it would not be chosen: a job sent there to find out is wasted.
    assert not any(place([option(1, 100.0), slow], rng, exploration=1.0).explored for _ in range(200))
    # Once the best option is busy enough for the claim to compete, it is worth a look.
    assert all(place([option(1, 6000.0), slow], rng, exploration=1.0).explored for _ in range(50))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"slack": -0.1}, "slack must be"), ({"choices": 0}, "choices >= 1")],
)
def test_cannot_place_with_bad_settings_or_no_options(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        place([option(1, 1.0)], random.Random(0), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one option"):
        place([], random.Random(0))
