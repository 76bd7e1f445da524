"""Filtering and scoring candidates for one job. Pure functions over frozen values.

A score is a weighted sum of components each in [0, 1], higher is better. Price and throughput
are normalised against the other providers offering the same model (the cheapest price, the
highest throughput), so the score of a provider does not depend on the job's budget: that is what
lets `CandidateIndex` sort each model's providers once and answer every job from that order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from node.scheduler.candidates import JobRequirements, ModelOffer, ProviderCandidate
from node.types import Address

# Latency at which the latency component is 0.5; unknown latency also scores 0.5.
REFERENCE_LATENCY_MS = 100.0
# More spare slots than this adds nothing: the provider is simply not busy.
SLOTS_SATURATION = 4


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    price: float = 0.30
    latency: float = 0.15
    success: float = 0.25
    throughput: float = 0.15
    warm: float = 0.10
    # Spare slots: the advertised free slots less this node's jobs running there. Heavy enough
    # that a client about to fill the best provider moves on to the next one before the
    # provider starts queueing (or refusing) its jobs.
    free_slots: float = 0.20


DEFAULT_WEIGHTS = ScoreWeights()


@dataclass(frozen=True, slots=True)
class ModelMarket:
    """The reference values for one model: its cheapest price and the highest throughput offered."""

    min_price_wei: int
    max_throughput: float

    @classmethod
    def of(cls, offers: Iterable[tuple[ProviderCandidate, ModelOffer]]) -> ModelMarket:
        pairs = list(offers)
        return cls(
            min_price_wei=min((o.price_wei for _, o in pairs), default=0),
            max_throughput=max((c.throughput for c, _ in pairs), default=0.0),
        )


def score(
    candidate: ProviderCandidate,
    offer: ModelOffer,
    market: ModelMarket,
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> float:
    """How good a pick `candidate` is for a job on `offer`'s model; higher is better."""
    stats = candidate.stats
    price = 1.0 if offer.price_wei <= 0 else (market.min_price_wei + 1) / (offer.price_wei + 1)
    latency = (
        0.5 if stats.latency_ms is None else REFERENCE_LATENCY_MS / (REFERENCE_LATENCY_MS + stats.latency_ms)
    )
    throughput = 0.0 if market.max_throughput <= 0 else candidate.throughput / market.max_throughput
    spare = max(candidate.free_slots - stats.in_flight, 0)
    slots = min(spare, SLOTS_SATURATION) / SLOTS_SATURATION
    return (
        weights.price * price
        + weights.latency * latency
        + weights.success * stats.success_rate
        + weights.throughput * throughput
        + weights.warm * (1.0 if offer.warm else 0.0)
        + weights.free_slots * slots
    )


def ineligibility(
    candidate: ProviderCandidate,
    requirements: JobRequirements,
    *,
    now: float,
    tried: Collection[Address] = (),
) -> str | None:
    """Why `candidate` cannot take the job, or None if it can."""
    offer = candidate.offer(requirements.model_id)
    if offer is None:
        return "does not serve the model"
    if offer.price_wei > requirements.max_price_wei:
        return f"asks {offer.price_wei} wei, above the budget of {requirements.max_price_wei}"
    kind = requirements.device_kind
    if kind is not None and all(d.kind != kind for d in candidate.devices):
        return f"has no {kind} device"
    if candidate.memory_for(kind) < requirements.min_memory_bytes:
        return f"has no {kind or 'single'} device with {requirements.min_memory_bytes} bytes of memory"
    if candidate.stats.backoff_until > now:
        return f"is backed off until {candidate.stats.backoff_until:.0f} after failures"
    if candidate.address in tried:
        return "already had a try at this job"
    return None


def filter_candidates(
    candidates: Iterable[ProviderCandidate],
    requirements: JobRequirements,
    *,
    now: float,
    tried: Collection[Address] = (),
) -> tuple[ProviderCandidate, ...]:
    return tuple(c for c in candidates if ineligibility(c, requirements, now=now, tried=tried) is None)


def rank(
    candidates: Sequence[ProviderCandidate],
    requirements: JobRequirements,
    *,
    now: float,
    tried: Collection[Address] = (),
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> tuple[ProviderCandidate, ...]:
    """Every eligible candidate, best first (ties broken by address so the order is total).

    Scans every candidate: the reference the indexed path (`CandidateIndex`) must agree with.
    """
    offering = [(c, o) for c in candidates if (o := c.offer(requirements.model_id)) is not None]
    market = ModelMarket.of(offering)
    eligible = [(c, o) for c, o in offering if ineligibility(c, requirements, now=now, tried=tried) is None]
    eligible.sort(key=lambda pair: (-score(pair[0], pair[1], market, weights), pair[0].address))
    return tuple(c for c, _ in eligible)


def next_candidate(
    ranked: Sequence[ProviderCandidate], tried: Collection[Address]
) -> ProviderCandidate | None:
    """Reassignment: the best-ranked candidate that has not had a try yet."""
    for candidate in ranked:
        if candidate.address not in tried:
            return candidate
    return None
