"""The client's view of the market for one decision: live adverts (already checked against the
on-chain registry by discovery) turned into scheduler candidates, with how each has served us and
how loaded each looks now (node.scheduler.load)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from node.discovery.advert import ProviderAdvert
from node.discovery.directory import Directory
from node.errors import SchedulerError
from node.executor.errors import UnknownModel
from node.scheduler import (
    DEFAULT_EXPLORATION,
    DEFAULT_HOLDS,
    CandidateIndex,
    Choice,
    DeviceOffer,
    JobRequirements,
    LoadSignals,
    ModelOffer,
    NoCandidate,
    Option,
    ProviderCandidate,
    ProviderStats,
    backoff_until,
    estimate,
    market_priors,
    observe,
    place,
    place_holds,
)
from node.storage import KnownProvider
from node.types import Address, Hash32


def candidate_of(
    advert: ProviderAdvert, stats: ProviderStats, *, fetching: Hash32 | None = None
) -> ProviderCandidate:
    """The provider as the scheduler sees it; with `fetching`, offering that model (which it does
    not hold) at the price of a first job for a model it fetches, cold start included."""
    offer = advert.offer
    warm = set(offer.warm_models)
    models = tuple(ModelOffer(p.model_id, p.price_per_job_wei, p.model_id in warm) for p in offer.prices)
    if fetching is not None and offer.fetch is not None and advert.price_for(fetching) is None:
        models += (ModelOffer(fetching, offer.fetch.first_job_wei, False),)
    return ProviderCandidate(
        address=advert.address,
        peer_id=advert.peer_id,
        models=models,
        devices=tuple(DeviceOffer(d.kind.value, d.model, d.memory_bytes) for d in offer.devices),
        free_slots=offer.free_slots,
        throughput=max((b.throughput_per_s for b in offer.benchmarks), default=0.0),
        stats=stats,
    )


@dataclass
class Matchmaker:
    """Chooses a provider for a job's next attempt and remembers how providers did: their run
    times and queues as observed, and which of this node's attempts each is running now.

    A decision estimates each eligible provider's completion time (its queue included) and picks
    among the good ones at random (`node.scheduler.load.place`), so clients that see the same
    adverts spread their jobs instead of herding onto one provider. A voucher job's attempt first
    asks a few good providers at once to hold it a slot (`holds`), and goes to the first that does.
    """

    directory: Directory
    rng: random.Random = field(default_factory=random.Random)
    exploration: float = DEFAULT_EXPLORATION
    clock: Callable[[], float] = time.time
    # Whether this node holds a model (a provider lacking it may fetch it from here).
    held_here: Callable[[Hash32], bool] = lambda _model_id: False
    stats: dict[Address, ProviderStats] = field(default_factory=dict)
    # Providers whose results lost a spot check: never chosen again by this node.
    excluded: set[Address] = field(default_factory=set)
    # Per provider: run time, queue drain and the latest queue position, as this node observed.
    _observed: dict[Address, LoadSignals] = field(default_factory=dict)
    # Per job: the provider of its current attempt and when the attempt was sent.
    _assigned: dict[Hash32, tuple[Address, float]] = field(default_factory=dict)
    _queue_positions: dict[Hash32, int] = field(default_factory=dict)
    # Per provider: the run time its last estimate assumed (how a first queued job is read).
    _assumed_ms: dict[Address, float] = field(default_factory=dict)
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
        """The live provider not yet tried that should finish the job soonest for the least
        money (randomized among equally good ones; for a small share of decisions when `explore`,
        one never tried); `SchedulerError` (or `UnknownModel`) naming why none.

        Providers that offer the model come first; only when none of them can take the job do
        providers that would fetch it (and charge its cold start) compete for it, and only for a
        model that some peer can serve them: this node, or a provider that offers it."""
        options = self._options(model_id, max_price_wei, tried, pinned)
        placed = place(options, self.rng, exploration=self.exploration if explore else 0.0)
        return Choice(placed.option.candidate, placed.option.offer, explored=placed.explored)

    def holds(
        self,
        model_id: Hash32,
        max_price_wei: int,
        *,
        tried: frozenset[Address] = frozenset(),
        copies: int = DEFAULT_HOLDS,
    ) -> list[Choice]:
        """The providers to ask at once to hold the job a slot (`place_holds`): the first to
        grant one gets the job. Errors as `choose`."""
        options = self._options(model_id, max_price_wei, tried, None)
        placed = place_holds(options, self.rng, copies=copies, exploration=self.exploration)
        return [Choice(p.option.candidate, p.option.offer, explored=p.explored) for p in placed]

    def _options(
        self, model_id: Hash32, max_price_wei: int, tried: frozenset[Address], pinned: Address | None
    ) -> list[Option]:
        """Every provider that can take the job, with its expected completion; raises why none."""
        now = self.clock()
        requirements = JobRequirements(model_id=model_id, max_price_wei=max_price_wei)
        adverts = self._pinned_to(
            self._not_excluded(self.directory.find(model_id=model_id), model_id), pinned
        )
        index = CandidateIndex.build([candidate_of(a, self._stats_of(a.address)) for a in adverts])
        eligible = index.ranked(requirements, now=now, tried=tried)
        fetchable = not eligible and (adverts or self.held_here(model_id))
        if fetchable and (fetchers := self._fetchers(model_id, pinned)):
            adverts = adverts + fetchers
            index = CandidateIndex.build(
                [candidate_of(a, self._stats_of(a.address), fetching=model_id) for a in adverts]
            )
            eligible = index.ranked(requirements, now=now, tried=tried)
        if not adverts:
            raise self._unheard(model_id, pinned)
        if not eligible:
            none = index.choose(requirements, now=now, rng=self.rng, tried=tried, exploration=0.0)
            reason = none.reason if isinstance(none, NoCandidate) else "no provider can take the job"
            raise SchedulerError(reason, hint="raise the max price, or wait and submit again")
        by_address = {a.address: a for a in adverts}
        signals = [self.signals(by_address[c.address], model_id, now) for c in eligible]
        prior_ms, floor_ms = market_priors(signals)
        options = []
        for candidate, load in zip(eligible, signals, strict=True):
            offer = candidate.offer(model_id)
            if offer is None:  # eligible means it serves the model
                continue
            expected = estimate(load, now, prior_ms=prior_ms, floor_ms=floor_ms)
            self._assumed_ms[candidate.address] = expected.service_ms
            explorable = not load.observed and expected.positions == 0
            options.append(
                Option(candidate, offer, expected.expected_ms, explorable, 1000 / expected.drain_ms)
            )
        return options

    def _not_excluded(self, adverts: list[ProviderAdvert], model_id: Hash32) -> list[ProviderAdvert]:
        if not self.excluded:
            return adverts
        kept = [a for a in adverts if a.address not in self.excluded]
        if adverts and not kept:
            raise SchedulerError(
                f"every live provider of model {model_id.hex()} lost a spot check here and is excluded",
                hint="see `gpunode node peers`; wait for other providers' adverts",
            )
        return kept

    def _fetchers(self, model_id: Hash32, pinned: Address | None) -> list[ProviderAdvert]:
        """Live providers that do not offer the model but fetch models they lack."""
        fetchers = [
            a
            for a in self.directory.live()
            if a.offer.fetch and a.price_for(model_id) is None and a.address not in self.excluded
        ]
        return self._pinned_to(fetchers, pinned)

    def _unheard(self, model_id: Hash32, pinned: Address | None) -> SchedulerError | UnknownModel:
        """Why no live advert offers the model, from what this node has heard."""
        model = model_id.hex()
        heard = self.directory.live()
        if pinned is not None:
            known = any(a.address.lower() == pinned.lower() for a in heard)
            why = "its advert does not offer it" if known else f"no advert of it heard among {len(heard)}"
            return SchedulerError(
                f"provider {pinned} has no live advert offering model {model}: {why}",
                hint="check `gpunode node peers`, or leave the provider unset",
            )
        if not heard:
            return UnknownModel(
                f"no live provider offers model {model}: this node has heard no provider's advert",
                hint="check that p2p.bootstrap names a reachable node (`gpunode node peers` says why "
                "there are none); adverts arrive a few seconds after a node connects",
            )
        others = len({p.model_id for a in heard for p in a.offer.prices} - {model_id})
        return UnknownModel(
            f"no live provider offers model {model}: the {len(heard)} provider(s) heard "
            f"offer {others} other model(s)",
            hint="check the model id; `gpunode models available` lists the models offered",
        )

    @staticmethod
    def _pinned_to(adverts: list[ProviderAdvert], pinned: Address | None) -> list[ProviderAdvert]:
        if pinned is None:
            return adverts
        return [a for a in adverts if a.address.lower() == pinned.lower()]

    def signals(self, advert: ProviderAdvert, model_id: Hash32, now: float) -> LoadSignals:
        """What this node knows of the provider's load: its advert, then what it observed."""
        offer = advert.offer
        issued = advert.issued_at_ms / 1000
        sent = [at for p, at in self._assigned.values() if p == advert.address]
        sent_since = sum(1 for at in sent if at >= issued)
        benchmark = next((b for b in offer.benchmarks if b.model_id == model_id), None)
        seen = self._observed.get(advert.address, _UNSEEN)
        if offer.free_slots > seen.slots_seen:
            seen = self._observed[advert.address] = replace(seen, slots_seen=offer.free_slots)
        return replace(
            seen,
            advertised_free=offer.free_slots,
            advertised_queued=offer.queued,
            advertised_at=issued,
            advertised_ms=None if benchmark is None else benchmark.latency_p50_ms,
            advertised_drain_ms=(
                1000 / benchmark.throughput_per_s if benchmark and benchmark.throughput_per_s > 0 else None
            ),
            sent_since_advert=sent_since,
            in_flight=len(sent),
            waited_ms=(now - min(sent)) * 1000 if sent else 0.0,
        )

    def _stats_of(self, provider: Address) -> ProviderStats:
        stats = self.stats.get(provider, ProviderStats())
        running = self._in_flight.get(provider, 0)
        return replace(stats, in_flight=running) if running else stats

    def assigned(self, job_id: Hash32, provider: Address) -> None:
        """The job's current attempt went to `provider` (replacing any earlier attempt's)."""
        self.released(job_id)
        self._assigned[job_id] = (provider, self.clock())
        self._in_flight[provider] += 1

    def accepted(self, job_id: Hash32, queue_position: int) -> None:
        """The provider of the job's current attempt accepted it behind `queue_position` jobs."""
        current = self._assigned.get(job_id)
        if current is None or queue_position < 0:
            return
        self._queue_positions[job_id] = queue_position
        seen = self._observed.get(current[0], _UNSEEN)
        self._observed[current[0]] = replace(seen, queue_seen=queue_position, queue_seen_at=self.clock())

    def waited(self, provider: Address, position: int) -> None:
        """`provider` queued a hold of ours behind `position` others: its slots are busy."""
        seen = self._observed.get(provider, _UNSEEN)
        self._observed[provider] = replace(seen, queue_seen=position + 1, queue_seen_at=self.clock())

    def released(self, job_id: Hash32) -> None:
        """The job's current attempt is over, whatever its outcome."""
        self._queue_positions.pop(job_id, None)
        assigned = self._assigned.pop(job_id, None)
        if assigned is not None:
            provider = assigned[0]
            self._in_flight[provider] -= 1
            if self._in_flight[provider] <= 0:
                del self._in_flight[provider]

    def in_flight(self, provider: Address) -> int:
        return self._in_flight.get(provider, 0)

    def succeeded(
        self, provider: Address, latency_ms: float, *, job_id: Hash32 | None = None, timed: bool = True
    ) -> None:
        """`provider` delivered a good result `latency_ms` after it was sent (for `job_id`, whose
        queue position, when the provider reported one, tells run time from queueing). With
        `timed` false the latency says little about the provider's load (it waited on the chain)
        and only counts the success."""
        if timed:
            seen = self._observed.get(provider, _UNSEEN)
            position = None if job_id is None else self._queue_positions.get(job_id)
            assumed = self._assumed_ms.get(provider)
            self._observed[provider] = observe(
                seen, latency_ms, position, now=self.clock(), assumed_ms=assumed
            )
        old = self.stats.get(provider, ProviderStats())
        smoothed = latency_ms if old.latency_ms is None else 0.8 * old.latency_ms + 0.2 * latency_ms
        self.stats[provider] = replace(
            old, successes=old.successes + 1, latency_ms=smoothed, consecutive_failures=0, backoff_until=0.0
        )

    def failed(self, provider: Address) -> float:
        """Count a failure; returns when the provider may be tried again."""
        old = self.stats.get(provider, ProviderStats())
        streak = old.consecutive_failures + 1
        until = backoff_until(streak, self.clock(), rng=self.rng)
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
            if provider.latency_ms is not None:
                self._observed[provider.address] = replace(
                    _UNSEEN, service_ms=provider.latency_ms, service_seen_at=self.clock()
                )


# Nothing observed yet; the advert's fields are filled in at each decision.
_UNSEEN = LoadSignals(advertised_free=0)
