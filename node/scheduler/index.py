"""Choosing a provider fast among thousands: candidates grouped by model and sorted once by score.

A decision walks its model's list from the best score down and stops at the first candidate the
job can use (budget, device memory, not backed off, not tried before). A provider without a
free slot stays eligible: its admission queues the job, and its score says it is busy. Scores
do not depend on the job (see `node.scheduler.scoring`), so the order built once serves every
job until the directory changes. The directory rebuilds the index from its snapshot when adverts or
statistics have changed (about 0.3 s for 10k providers, so at most every few seconds), and passes
providers that failed since then in `tried`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from node.scheduler.candidates import JobRequirements, ModelOffer, ProviderCandidate
from node.scheduler.scoring import DEFAULT_WEIGHTS, ModelMarket, ScoreWeights, score
from node.types import Address, Hash32

# Share of decisions that pick a random eligible provider instead of the best, so that providers
# without a track record get one (epsilon-greedy).
DEFAULT_EXPLORATION = 0.05
# An exploring decision looks at this many random candidates for an eligible one.
_EXPLORATION_SAMPLES = 16


@dataclass(frozen=True, slots=True)
class Choice:
    candidate: ProviderCandidate
    offer: ModelOffer
    explored: bool = False


@dataclass(frozen=True, slots=True)
class NoCandidate:
    """No provider can take the job; `reason` says why in terms a user can act on."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Entry:
    score: float
    address: Address
    price_wei: int
    memory: Mapping[str | None, int]
    backoff_until: float
    candidate: ProviderCandidate
    offer: ModelOffer


class CandidateIndex:
    """An immutable index of candidates by model, each model's list sorted best first."""

    def __init__(self, by_model: Mapping[Hash32, tuple[_Entry, ...]], providers: int) -> None:
        self._by_model = by_model
        self._providers = providers
        # The same order split by device kind (None: any), so a decision never walks past
        # providers without the kind of device the job needs.
        self._by_kind: dict[tuple[Hash32, str | None], tuple[_Entry, ...]] = {}
        # Per list: the lowest price and the most memory in it, to turn hopeless requests away at once.
        self._bounds: dict[tuple[Hash32, str | None], tuple[int, int]] = {}
        for model_id, entries in by_model.items():
            kinds = {kind for e in entries for kind in e.memory}
            for kind in kinds:
                subset = tuple(e for e in entries if kind in e.memory)
                self._by_kind[model_id, kind] = subset
                self._bounds[model_id, kind] = (
                    min(e.price_wei for e in subset),
                    max(e.memory[kind] for e in subset),
                )

    @classmethod
    def build(
        cls, candidates: Iterable[ProviderCandidate], weights: ScoreWeights = DEFAULT_WEIGHTS
    ) -> CandidateIndex:
        grouped: defaultdict[Hash32, list[tuple[ProviderCandidate, ModelOffer]]] = defaultdict(list)
        memory: dict[Address, Mapping[str | None, int]] = {}
        # One entry per provider: a later advert of the same address replaces an earlier one.
        latest = {candidate.address: candidate for candidate in candidates}
        for candidate in latest.values():
            memory[candidate.address] = _memory_by_kind(candidate)
            for offer in candidate.models:
                grouped[offer.model_id].append((candidate, offer))
        by_model = {model_id: _sorted_entries(pairs, memory, weights) for model_id, pairs in grouped.items()}
        return cls(by_model, len(memory))

    def __len__(self) -> int:
        return self._providers

    @property
    def models(self) -> frozenset[Hash32]:
        return frozenset(self._by_model)

    def ranked(
        self,
        requirements: JobRequirements,
        *,
        now: float,
        tried: Collection[Address] = (),
        limit: int | None = None,
    ) -> tuple[ProviderCandidate, ...]:
        """Eligible candidates, best first; at most `limit` of them."""
        found: list[ProviderCandidate] = []
        for entry in self._eligible(requirements, now, tried):
            found.append(entry.candidate)
            if limit is not None and len(found) >= limit:
                break
        return tuple(found)

    def choose(
        self,
        requirements: JobRequirements,
        *,
        now: float,
        rng: random.Random,
        tried: Collection[Address] = (),
        exploration: float = DEFAULT_EXPLORATION,
    ) -> Choice | NoCandidate:
        """The provider for the job's next attempt: usually the best, sometimes (exploration) another.

        Reassignment after a rejection, timeout or dead provider is the same call with the
        providers already tried in `tried`. Providers backed off since the index was built can be
        left out the same way, by adding their addresses to `tried`.
        """
        if exploration > 0 and rng.random() < exploration:
            explored = self._explore(requirements, now, tried, rng)
            if explored is not None:
                return Choice(explored.candidate, explored.offer, explored=True)
        best = next(self._eligible(requirements, now, tried), None)
        if best is None:
            return NoCandidate(self._explain(requirements, now, tried))
        return Choice(best.candidate, best.offer)

    def _eligible(
        self, requirements: JobRequirements, now: float, tried: Collection[Address]
    ) -> Iterator[_Entry]:
        max_price = requirements.max_price_wei
        kind = requirements.device_kind
        min_memory = requirements.min_memory_bytes
        key = (requirements.model_id, kind)
        bounds = self._bounds.get(key)
        if bounds is None or bounds[0] > max_price or bounds[1] < min_memory:
            return
        for e in self._by_kind[key]:
            if (
                e.price_wei <= max_price
                and e.backoff_until <= now
                and e.memory.get(kind, 0) >= min_memory
                and e.address not in tried
            ):
                yield e

    def _explore(
        self, requirements: JobRequirements, now: float, tried: Collection[Address], rng: random.Random
    ) -> _Entry | None:
        entries = self._by_kind.get((requirements.model_id, requirements.device_kind), ())
        if not entries:
            return None
        for _ in range(_EXPLORATION_SAMPLES):
            e = entries[rng.randrange(len(entries))]
            if (
                e.price_wei <= requirements.max_price_wei
                and e.backoff_until <= now
                and e.memory.get(requirements.device_kind, 0) >= requirements.min_memory_bytes
                and e.address not in tried
            ):
                return e
        return None

    def _explain(self, requirements: JobRequirements, now: float, tried: Collection[Address]) -> str:
        entries = self._by_model.get(requirements.model_id, ())
        model = requirements.model_id.hex()
        if not entries:
            return f"no provider serves model {model}; check the model id or wait for adverts"
        kind = requirements.device_kind
        bounds = self._bounds.get((requirements.model_id, kind))
        if bounds is None:
            return f"no provider serving model {model} has a {kind} device; ask for another device kind"
        cheapest, most_memory = bounds
        if cheapest > requirements.max_price_wei:
            return (
                f"every provider serving model {model} asks more than the budget of "
                f"{requirements.max_price_wei} wei (cheapest: {cheapest} wei); raise the budget"
            )
        if most_memory < requirements.min_memory_bytes:
            return (
                f"no provider serving model {model} has a {f'{kind} device' if kind else 'device'} with "
                f"{requirements.min_memory_bytes} bytes of memory (largest: {most_memory})"
            )
        reasons: Counter[str] = Counter()
        for e in entries:
            reasons[_why_not(e, requirements, now, tried)] += 1
        cheapest = min(e.price_wei for e in entries)
        summary = ", ".join(f"{n} {why}" for why, n in reasons.most_common())
        return (
            f"none of the {len(entries)} providers serving model {model} can take the job: {summary} "
            f"(cheapest asks {cheapest} wei, the budget is {requirements.max_price_wei} wei)"
        )


def _why_not(e: _Entry, requirements: JobRequirements, now: float, tried: Collection[Address]) -> str:
    if e.price_wei > requirements.max_price_wei:
        return "ask more than the budget"
    if e.memory.get(requirements.device_kind, 0) < requirements.min_memory_bytes:
        return "lack a device with enough memory"
    if e.backoff_until > now:
        return "are backed off after failures"
    if e.address in tried:
        return "already had a try"
    return "are eligible"


def _sorted_entries(
    pairs: list[tuple[ProviderCandidate, ModelOffer]],
    memory: Mapping[Address, Mapping[str | None, int]],
    weights: ScoreWeights,
) -> tuple[_Entry, ...]:
    market = ModelMarket.of(pairs)
    entries = [
        _Entry(
            score=score(c, o, market, weights),
            address=c.address,
            price_wei=o.price_wei,
            memory=memory[c.address],
            backoff_until=c.stats.backoff_until,
            candidate=c,
            offer=o,
        )
        for c, o in pairs
    ]
    entries.sort(key=lambda e: (-e.score, e.address))
    return tuple(entries)


def _memory_by_kind(candidate: ProviderCandidate) -> dict[str | None, int]:
    memory: dict[str | None, int] = {None: candidate.memory_for(None)}
    for device in candidate.devices:
        memory[device.kind] = max(memory.get(device.kind, 0), device.memory_bytes)
    return memory
