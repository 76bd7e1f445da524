"""The client's view of the market for one decision: live adverts (already checked against the
on-chain registry by discovery) turned into scheduler candidates, with how each has served us."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from node.discovery.advert import ProviderAdvert
from node.discovery.directory import Directory
from node.errors import SchedulerError
from node.executor.errors import UnknownModel
from node.scheduler import (
    DEFAULT_EXPLORATION,
    CandidateIndex,
    Choice,
    DeviceOffer,
    JobRequirements,
    ModelOffer,
    NoCandidate,
    ProviderCandidate,
    ProviderStats,
    backoff_until,
)
from node.storage import KnownProvider
from node.types import Address, Hash32


def candidate_of(advert: ProviderAdvert, stats: ProviderStats) -> ProviderCandidate:
    offer = advert.offer
    warm = set(offer.warm_models)
    return ProviderCandidate(
        address=advert.address,
        peer_id=advert.peer_id,
        models=tuple(ModelOffer(p.model_id, p.price_per_job_wei, p.model_id in warm) for p in offer.prices),
        devices=tuple(DeviceOffer(d.kind.value, d.model, d.memory_bytes) for d in offer.devices),
        free_slots=offer.free_slots,
        throughput=max((b.throughput_per_s for b in offer.benchmarks), default=0.0),
        stats=stats,
    )


@dataclass
class Matchmaker:
    """Chooses a provider for a job's next attempt and remembers how providers did, including
    how many of this node's attempts each is running now (so one client spreads its jobs before
    it fills a provider's advertised slots)."""

    directory: Directory
    rng: random.Random = field(default_factory=random.Random)
    exploration: float = DEFAULT_EXPLORATION
    stats: dict[Address, ProviderStats] = field(default_factory=dict)
    _assigned: dict[Hash32, Address] = field(default_factory=dict)
    _in_flight: Counter[Address] = field(default_factory=Counter)

    def choose(
        self,
        model_id: Hash32,
        max_price_wei: int,
        *,
        tried: frozenset[Address] = frozenset(),
        pinned: Address | None = None,
        explore: bool = True,
    ) -> Choice:
        """The best live provider not yet tried (or, for a small share of decisions when `explore`,
        another eligible one); `SchedulerError` (or `UnknownModel`) naming why none."""
        adverts = self.directory.find(model_id=model_id)
        if pinned is not None:
            adverts = [a for a in adverts if a.address.lower() == pinned.lower()]
        if not adverts:
            if pinned is not None:
                raise SchedulerError(
                    f"provider {pinned} has no live advert offering model {model_id.hex()}",
                    hint="check `gpunode node peers`, or leave the provider unset",
                )
            raise UnknownModel(
                f"no live provider offers model {model_id.hex()}",
                hint="check the model id, or wait for providers' adverts to arrive",
            )
        candidates = [candidate_of(a, self._stats_of(a.address)) for a in adverts]
        index = CandidateIndex.build(candidates)
        choice = index.choose(
            JobRequirements(model_id=model_id, max_price_wei=max_price_wei),
            now=time.time(),
            rng=self.rng,
            tried=tried,
            exploration=self.exploration if explore else 0.0,
        )
        if isinstance(choice, NoCandidate):
            raise SchedulerError(choice.reason, hint="raise the max price, or wait and submit again")
        return choice

    def _stats_of(self, provider: Address) -> ProviderStats:
        stats = self.stats.get(provider, ProviderStats())
        running = self._in_flight.get(provider, 0)
        return replace(stats, in_flight=running) if running else stats

    def assigned(self, job_id: Hash32, provider: Address) -> None:
        """The job's current attempt went to `provider` (replacing any earlier attempt's)."""
        self.released(job_id)
        self._assigned[job_id] = provider
        self._in_flight[provider] += 1

    def released(self, job_id: Hash32) -> None:
        """The job's current attempt is over, whatever its outcome."""
        provider = self._assigned.pop(job_id, None)
        if provider is not None:
            self._in_flight[provider] -= 1
            if self._in_flight[provider] <= 0:
                del self._in_flight[provider]

    def in_flight(self, provider: Address) -> int:
        return self._in_flight.get(provider, 0)

    def succeeded(self, provider: Address, latency_ms: float) -> None:
        old = self.stats.get(provider, ProviderStats())
        smoothed = latency_ms if old.latency_ms is None else 0.8 * old.latency_ms + 0.2 * latency_ms
        self.stats[provider] = replace(
            old, successes=old.successes + 1, latency_ms=smoothed, consecutive_failures=0, backoff_until=0.0
        )

    def failed(self, provider: Address) -> float:
        """Count a failure; returns when the provider may be tried again."""
        old = self.stats.get(provider, ProviderStats())
        streak = old.consecutive_failures + 1
        until = backoff_until(streak, time.time(), rng=self.rng)
        self.stats[provider] = replace(
            old, failures=old.failures + 1, consecutive_failures=streak, backoff_until=until
        )
        return until

    def load(self, known: Iterable[KnownProvider]) -> None:
        """Start from how providers served this node before a restart."""
        for provider in known:
            self.stats[provider.address] = ProviderStats(
                successes=provider.successes,
                failures=provider.failures,
                latency_ms=provider.latency_ms,
                consecutive_failures=provider.consecutive_failures,
                backoff_until=provider.backoff_until,
            )
