"""Live load: how long a job would take at each provider, and the pick among the good ones.

A client learns a provider's load from what it already receives: the free slots and queue of the
provider's latest advert (published again when its load changes significantly), the queue
position each `JobAccepted` reports, its own jobs there, and the latencies it observed.
`estimate` turns them into an expected completion time, queue included. What the client observed
overrides what the advert claims: a claim never makes a provider look faster than the fastest one
observed, claimed capacity counts only once a run time was observed, and a job of ours still out
there bounds the provider's run time from below, so a provider cannot talk its way into work that
it then queues. Observations fade back to the unobserved guess, so nobody is out for good.

`place` finds the cheapest price among the options whose expected completion is close to the
best, and among the options at that price draws `d` distinct ones at random in proportion to the
rate at which each finishes jobs (capped), then takes the one that finishes clearly sooner, or
else the first drawn (power of d choices). Clients that see the same adverts then spread their
jobs like the providers' capacity instead of all picking the one that looks best, and a cheaper
provider wins whenever it would finish about as soon. Choosing the apparent best instead (or
sampling only among the near-best) herds: measured with scripts/sim_scheduling.py, adverts paced
under the flood limits are too stale for it.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from node.scheduler.candidates import ModelOffer, ProviderCandidate

# Expected completion within this share (plus `SLACK_MS`) of the best counts as just as good.
DEFAULT_SLACK = 0.25
SLACK_MS = 10.0
# Options drawn among the equally cheap; the one that finishes clearly sooner is taken.
DEFAULT_CHOICES = 2
# No provider is sampled more often than this many times the median provider.
RATE_CAP = 4.0
# A provider never observed is explored only while what it claims (without a claim: the market's
# median run time) is within this factor of the best option's expected completion.
EXPLORE_WITHIN = 3.0
# The guess for a provider's run time when nobody has observed or advertised one.
UNKNOWN_SERVICE_MS = 100.0
# An observed run time counts half after this long without a new observation.
OBSERVATION_HALF_LIFE_S = 300.0
# Providers asked to hold a slot for one job, and how much later than the best one's a provider's
# expected completion may be for it to be asked (node.scheduler.holds).
DEFAULT_HOLDS = 3
HOLD_WITHIN = 3.0
# Weight of a new observation in the moving averages of run time and queue drain.
OBSERVATION_WEIGHT = 0.25


@dataclass(frozen=True, slots=True)
class LoadSignals:
    """What one client knows about one provider's load and speed right now."""

    advertised_free: int  # free slots in the provider's latest advert
    advertised_queued: int = 0  # jobs waiting for a slot, as that advert said
    slots_seen: int = 1  # the most free slots it ever advertised to this client
    advertised_at: float = 0.0  # when that advert was issued (unix s)
    advertised_ms: float | None = None  # the advert's benchmark latency: a claim
    advertised_drain_ms: float | None = None  # 1 / the advert's benchmark throughput: a claim
    sent_since_advert: int = 0  # this client's jobs sent there after the advert, still running
    in_flight: int = 0  # this client's jobs there now, whenever sent
    waited_ms: float = 0.0  # how long the oldest of them has been out
    queue_seen: int = 0  # the queue position the latest `JobAccepted` from it reported
    queue_seen_at: float = 0.0  # when that came
    service_ms: float | None = None  # observed: latency of jobs that started at once (moving average)
    service_seen_at: float = 0.0  # when it was last observed
    # Observed on jobs that queued: the latency beyond the run time, and the queue positions
    # they were accepted at (moving averages); their ratio is the time one position takes.
    queued_wait_ms: float = 0.0
    queued_positions: float = 0.0

    @property
    def observed(self) -> bool:
        return self.service_ms is not None

    @property
    def drain_ms(self) -> float | None:
        """Observed: latency added per queue position ahead; None until a job queued there."""
        return self.queued_wait_ms / self.queued_positions if self.queued_positions > 0 else None


@dataclass(frozen=True, slots=True)
class Estimate:
    """A provider's expected run time and the queue positions a job sent now would wait."""

    service_ms: float
    drain_ms: float
    positions: float

    @property
    def expected_ms(self) -> float:
        return self.service_ms + self.positions * self.drain_ms


def estimate(signals: LoadSignals, now: float, *, prior_ms: float, floor_ms: float = 0.0) -> Estimate:
    """The expected completion of a job sent now.

    `prior_ms` stands for the run time of a provider nobody has observed (the market's median,
    so a new provider is neither favoured nor punished for being new); `floor_ms` is the fastest
    run time observed anywhere, below which an advertised claim is not believed.
    """
    claimed = signals.advertised_ms if signals.advertised_ms and signals.advertised_ms > 0 else prior_ms
    unobserved = max(claimed, floor_ms)
    service = unobserved
    if signals.service_ms is not None:
        # An observation fades back towards what an unobserved provider would get: one unlucky
        # job does not keep a provider out for good (nor one good job keep it in).
        weight = 0.5 ** (max(0.0, now - signals.service_seen_at) / OBSERVATION_HALF_LIFE_S)
        service = unobserved + (signals.service_ms - unobserved) * weight
    # A job of ours out there for longer already is a latency observed in part: at least that.
    service = max(service, signals.waited_ms)
    # The time one queue position takes: as the advert's benchmark claims, but never less than
    # the run time over the most slots it ever advertised free (without a claim: as if it ran
    # one job at a time), and never less than observed on jobs that queued there.
    # Capacity claims count once a run time is observed: until then, one slot.
    slots = signals.slots_seen if signals.observed else 1
    claimed_drain = signals.advertised_drain_ms
    drain = service
    if claimed_drain is not None:
        drain = min(service, max(claimed_drain, service / slots))
    if signals.drain_ms is not None:
        drain = max(drain, signals.drain_ms)
    drain = max(drain, 1e-3)
    # A queue position reported earlier has drained since, one position per `drain`.
    drained = max(0.0, now - signals.queue_seen_at) * 1000 / drain
    queued = max(0.0, signals.queue_seen - drained)
    # Jobs sent since the advert take its free slots first, then queue behind the jobs it said
    # were waiting; the next one waits behind all of them.
    if signals.observed:
        beyond = max(0, signals.sent_since_advert + signals.advertised_queued + 1 - signals.advertised_free)
    else:
        # Unverified free slots: one, and this client's jobs there take it whenever they were sent.
        beyond = max(0, signals.in_flight + signals.advertised_queued + 1 - min(signals.advertised_free, 1))
    return Estimate(service, drain, max(queued, float(beyond)))


def observe(
    signals: LoadSignals,
    latency_ms: float,
    queue_position: int | None,
    *,
    now: float,
    assumed_ms: float | None = None,
) -> LoadSignals:
    """`signals` after a job accepted at `queue_position` took `latency_ms`; `assumed_ms` is
    the run time the job was sent on (the claim or the prior, when nothing was observed)."""
    if not queue_position:
        # Started at once (or the position is unknown): the latency is the run time.
        return replace(signals, service_ms=_moving(signals.service_ms, latency_ms), service_seen_at=now)
    service = signals.service_ms
    if service is None:
        # Queued before a run time was seen: the run time lies between latency / (1 + position)
        # (each position ahead drained in a run time at most) and the latency itself; what the
        # job was sent on stands where it fits, the nearer bound where it does not.
        low = latency_ms / (1 + queue_position)
        service = min(latency_ms, max(low, assumed_ms if assumed_ms is not None else low))
    # Averaged apart and divided, so one long wait behind a single position does not dominate.
    first = signals.queued_positions == 0
    return replace(
        signals,
        service_ms=service,
        service_seen_at=now if signals.service_ms is None else signals.service_seen_at,
        queued_wait_ms=_moving(None if first else signals.queued_wait_ms, max(0.0, latency_ms - service)),
        queued_positions=_moving(None if first else signals.queued_positions, float(queue_position)),
    )


def _moving(average: float | None, sample: float) -> float:
    if average is None:
        return sample
    return (1 - OBSERVATION_WEIGHT) * average + OBSERVATION_WEIGHT * sample


def market_priors(signals: Sequence[LoadSignals]) -> tuple[float, float]:
    """(prior_ms, floor_ms) for `estimate`: the median and the least of the observed run times."""
    observed = [s.service_ms for s in signals if s.service_ms is not None]
    if not observed:
        claims = [s.advertised_ms for s in signals if s.advertised_ms and s.advertised_ms > 0]
        return (statistics.median(claims) if claims else UNKNOWN_SERVICE_MS), 0.0
    return statistics.median(observed), min(observed)


@dataclass(frozen=True, slots=True)
class Option:
    """An eligible provider for a job, with its offer and its expected completion."""

    candidate: ProviderCandidate
    offer: ModelOffer
    expected_ms: float
    # Never observed by this client and would start the job at once: worth a look when exploring.
    explorable: bool = False
    # Jobs per second it finishes when busy (1 / drain): how often it is sampled.
    rate: float = 1.0


@dataclass(frozen=True, slots=True)
class Placement:
    option: Option
    explored: bool = False


def place(
    options: Sequence[Option],
    rng: random.Random,
    *,
    exploration: float = 0.0,
    slack: float = DEFAULT_SLACK,
    choices: int = DEFAULT_CHOICES,
) -> Placement:
    """The option for the job; `options` must not be empty (the caller explains why none fit).

    With probability `exploration`, a provider this client never observed that would start the
    job at once, when there is one: that is how a new provider gets its first jobs even where
    the market's median run time (its prior) is slower than the best providers' now. Only one
    whose expected completion (its own claim, or that prior) is within `EXPLORE_WITHIN` of the
    best option's is explored: were it as fast as it looks it would still lose to the best, so
    a job sent there to find out would only be slow (scripts/sim_scheduling.py: exploring
    providers that claim four times the best run time raised the p99 at 80% load by a tenth).
    """
    if not options:
        raise ValueError("place() needs at least one option")
    if slack < 0 or choices < 1:
        raise ValueError(f"slack must be >= 0 and choices >= 1, got {slack} and {choices}")
    best = min(o.expected_ms for o in options)
    explored = _explore(options, rng, best, exploration)
    if explored is not None:
        return explored
    good = [o for o in options if o.expected_ms <= best * (1 + slack) + SLACK_MS]
    cheapest = min(o.offer.price_wei for o in good)
    # Sampled by how fast each finishes jobs, then the sooner of the sample: the rate spreads
    # clients that see the same (stale) adverts; the comparison keeps jobs off long queues.
    tier = [o for o in options if o.offer.price_wei == cheapest]
    sampled = _draw(tier, choices, rng)
    # The first drawn unless another finishes clearly sooner: estimates are noisy, and a
    # provider that lost every close call on noise would never be observed again.
    sooner = min(sampled, key=lambda o: o.expected_ms)
    first = sampled[0]
    return Placement(first if first.expected_ms <= sooner.expected_ms * (1 + slack) + SLACK_MS else sooner)


def place_holds(
    options: Sequence[Option],
    rng: random.Random,
    *,
    copies: int = DEFAULT_HOLDS,
    exploration: float = 0.0,
    slack: float = DEFAULT_SLACK,
    within: float = HOLD_WITHIN,
) -> list[Placement]:
    """The providers to ask to hold the job a slot (node.scheduler.holds): `copies` distinct
    options at the cheapest price among the good ones, drawn like `place` draws (in proportion to
    the rate at which each finishes jobs, capped), among those whose expected completion is within
    `within` times the best. The job goes to whichever grants a slot first, so what matters is
    less which one looks soonest (adverts are stale) than that the holds spread like the
    providers' capacity; a provider many times slower than the best is left out, since a free
    slot there would still finish the job late (scripts/sim_scheduling.py).

    With probability `exploration`, one of the holds goes to a provider this client never
    observed, as in `place`."""
    if not options:
        raise ValueError("place_holds() needs at least one option")
    if copies < 1 or within < 1:
        raise ValueError(f"copies and within must be >= 1, got {copies} and {within}")
    best = min(o.expected_ms for o in options)
    good = [o for o in options if o.expected_ms <= best * (1 + slack) + SLACK_MS]
    cheapest = min(o.offer.price_wei for o in good)
    tier = [o for o in options if o.offer.price_wei == cheapest and o.expected_ms <= best * within + SLACK_MS]
    placed = [Placement(o) for o in _draw(tier, copies, rng)]
    explored = _explore(options, rng, best, exploration)
    if explored is not None and all(p.option is not explored.option for p in placed):
        placed[-1] = explored
    return placed


def _explore(
    options: Sequence[Option], rng: random.Random, best: float, exploration: float
) -> Placement | None:
    """A provider never observed that would start the job at once, for a share `exploration` of
    the decisions (see `place`)."""
    if exploration > 0 and rng.random() < exploration:
        unknown = [o for o in options if o.explorable and o.expected_ms <= best * EXPLORE_WITHIN + SLACK_MS]
        if unknown:
            return Placement(unknown[rng.randrange(len(unknown))], explored=True)
    return None


def _draw(tier: list[Option], count: int, rng: random.Random) -> list[Option]:
    """`count` distinct options of `tier`, each drawn in proportion to its rate; no provider is
    drawn more than `RATE_CAP` times as often as the median one, whatever capacity it claims."""
    cap = RATE_CAP * statistics.median(o.rate for o in tier)
    return _sample(tier, [min(o.rate, cap) for o in tier], count, rng)


def _sample(options: list[Option], weights: list[float], count: int, rng: random.Random) -> list[Option]:
    """`count` distinct options (all of them when fewer), each drawn in proportion to its weight."""
    pool = list(zip(options, weights, strict=True))
    drawn = []
    for _ in range(min(count, len(pool))):
        index = rng.choices(range(len(pool)), weights=[w for _, w in pool])[0]
        drawn.append(pool.pop(index)[0])
    return drawn
