"""Scheduling under load, against the ideal: the node's own scheduler in a simulated market.

20 clients, each with the `Directory` and `Matchmaker` a node runs, send jobs to 50 providers of
mixed speed. Providers admit with the node's `admit`, count their load with the node's `Load`
and pace their free-slot adverts with the node's `LoadPublication`; clients learn from those
adverts, from the queue positions in acceptances and from the latencies they observe, as a node
does. Only execution and the network are simulated, in virtual time. Jobs arrive as one Poisson
stream, spread evenly over the clients, at 50, 80 and 95% of the providers' total capacity; the
same jobs (arrival, size, network delays) also go to an omniscient join-the-shortest-expected-
delay scheduler (JSED) that sees every queue: the ideal.

Clients bind a job late, as a node does for voucher jobs: each job asks `DEFAULT_HOLDS` good
providers (the node's `Matchmaker.holds`) to hold it a slot; each provider queues its holds in the
node's `HoldBook` and grants the oldest as its slots free; the job goes to the first provider whose
grant reaches the client, and its other holds are given up (each message costs a network delay).
A job whose holds are all refused queues where the node's `place` puts it.

Printed: latency relative to the ideal (mean and p99) per load; idle while queued: the share of
time at 80% load in which some provider had a free slot while a job that had arrived and not
started waited for a provider no faster than the idle one (so the idle one would have finished it
sooner). A job waits in a provider's queue, for that provider, or while every hold of it sits in a
provider's queue (none granted, none on its way), for the fastest of those providers; the same
definition applies to the ideal (whose jobs never hold). Also the most jobs any provider got at 80%
load relative to the equal share among the providers of its speed class; job protocol messages per
job (hold requests and answers, holds given up, requests, acceptances, results) and refused holds
per job; and the share of jobs that waited (in a provider's queue, or for the slot that was
granted to them), for both, per load.

    .venv/bin/python scripts/sim_scheduling.py [--jobs 10000] [--seed 1] [--liars 0] [--json]

`--liars N` makes N slow providers lie: their adverts claim 64 free slots and a 1 ms run time,
they grant every hold at once, and they report every job as starting at once while queueing it;
the liars' share is printed.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from node.client.matching import Matchmaker
from node.discovery.advert import Benchmark, Device, DeviceKind, ModelPrice, Offer, ProviderAdvert
from node.discovery.directory import Directory
from node.discovery.pacing import LoadPublication
from node.provider.runner import Load
from node.scheduler import AdmissionPolicy, HoldBook, HoldKey, JobOffer, Rejected, admit
from node.types import Address, Hash32

MODEL = Hash32(b"\x42" * 32)
PRICE_WEI = 10**12
LOADS = (0.5, 0.8, 0.95)
REPORTED_LOAD = 0.8
# (run time of an average job in ms, slots, providers) per speed class: 50 providers in all.
CLASSES = ((1000.0, 2, 15), (2000.0, 2, 20), (4000.0, 1, 15))
CLIENTS = 20
EPOCH_S = 1_800_000_000.0  # virtual time starts here (adverts carry unix milliseconds)
ADVERT_TTL_S = 120.0
ADVERT_REFRESH_S = 30.0
WARMUP_SHARE = 0.1  # the first jobs only fill the queues; they are not measured
JOB_SIZE_SIGMA = 0.25  # job sizes vary lognormally around the class's run time
NET_MS = (10.0, 40.0)  # one-way delay of a job message
GOSSIP_MS = (50.0, 200.0)  # an advert reaching one client
LIAR_FREE_SLOTS = 64


@dataclass(frozen=True, slots=True)
class Job:
    n: int
    arrival: float  # seconds of virtual time
    client: int
    size: float  # the job's run time as a multiple of a provider's average
    send_s: float  # network delays: request, acceptance, result
    accept_s: float
    result_s: float


@dataclass
class Provider:
    n: int
    mean_ms: float
    slots: int
    liar: bool = False
    address: Address = field(init=False)
    load: Load = field(init=False)
    waiting: deque[tuple[Job, Callable[[], None]]] = field(default_factory=deque)
    holds: HoldBook = field(default_factory=HoldBook)
    served: int = 0

    def __post_init__(self) -> None:
        self.address = Address(f"0x{self.n + 1:040x}")
        self.load = Load(slots=self.slots)


@dataclass
class _Pending:
    """A job not yet sent to a provider: its holds not refused (`live`), those waiting in a queue
    (`queued`) and where, the fastest provider asked, and the provider it went to."""

    job: Job
    live: int
    fastest_ms: float
    queued: int = 0
    waiting_at: set[Address] = field(default_factory=set)
    queued_at: set[Address] = field(default_factory=set)  # every provider where a hold of it waited
    placed: Address | None = None


def _key(job: Job) -> HoldKey:
    return (f"client-{job.client}", Hash32(job.n.to_bytes(32, "big")))


class Clock:
    """Virtual time and the events due in it."""

    def __init__(self) -> None:
        self.now = EPOCH_S
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def at(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (max(when, self.now), next(self._order), event))

    def run(self) -> None:
        while self._events:
            self.now, _, event = heapq.heappop(self._events)
            event()

    def time(self) -> float:
        return self.now


def make_providers(liars: int) -> list[Provider]:
    speeds = [(mean, slots) for mean, slots, count in CLASSES for _ in range(count)]
    providers = [Provider(n, mean, slots) for n, (mean, slots) in enumerate(speeds)]
    slow = [p for p in providers if p.mean_ms == CLASSES[-1][0]]
    for provider in slow[:liars]:
        provider.liar = True
    return providers


def capacity_per_s(providers: list[Provider]) -> float:
    return sum(p.slots * 1000 / p.mean_ms for p in providers)


def make_jobs(count: int, rate_per_s: float, rng: random.Random) -> list[Job]:
    jobs = []
    t = EPOCH_S + 5.0  # adverts have spread by then
    for n in range(count):
        t += rng.expovariate(rate_per_s)
        size = rng.lognormvariate(-(JOB_SIZE_SIGMA**2) / 2, JOB_SIZE_SIGMA)
        delays = [rng.uniform(*NET_MS) / 1000 for _ in range(3)]
        jobs.append(Job(n, t, rng.randrange(CLIENTS), size, *delays))
    return jobs


class IdleWhileQueued:
    """Time in the measured window in which a provider idled (had a free slot) while a job that
    had arrived and not started waited for a provider no faster than the idle one: a job the idle
    one would have finished sooner. A job waits in a provider's queue (for that provider), or
    while every hold of it sits in a provider's queue (for the fastest of those providers).

    `account` is called just before any provider's load or any job's waiting changes, with every
    provider's (run time, has a queue, has a free slot) and, for each job waiting on its holds,
    the run time of the fastest provider holding it, as they were since the call before."""

    def __init__(self, window: tuple[float, float]) -> None:
        self.window = window
        self.seconds = 0.0
        self._since = window[0]

    def account(
        self, now: float, providers: Iterable[tuple[float, bool, bool]], holding: Iterable[float] = ()
    ) -> None:
        start, end = self.window
        overlap = max(0.0, min(now, end) - max(self._since, start))
        self._since = now
        if not overlap:
            return
        states = list(providers)
        queued = [mean_ms for mean_ms, waiting, _ in states if waiting] + list(holding)
        idle = [mean_ms for mean_ms, _, free in states if free]
        if queued and idle and min(idle) <= max(queued):
            self.seconds += overlap

    @property
    def share(self) -> float:
        start, end = self.window
        return self.seconds / (end - start)


# the market as the node schedules it -------------------------------------------------------------


class Market:
    def __init__(self, providers: list[Provider], rng: random.Random) -> None:
        self.clock = Clock()
        self.rng = rng
        self.providers = providers
        self.directories = [Directory(clock=self.clock.time) for _ in range(CLIENTS)]
        self.clients = [
            Matchmaker(d, rng=random.Random(rng.random()), clock=self.clock.time) for d in self.directories
        ]
        self.by_address = {p.address: p for p in providers}
        self.publications = {p.address: LoadPublication() for p in providers}
        self.sequence = dict.fromkeys(self.by_address, 0)
        self.pending: set[Address] = set()
        self.latency: dict[int, float] = {}
        self.policy = {p.address: AdmissionPolicy({MODEL: PRICE_WEI}, slots=p.slots) for p in providers}
        self.idle_while_queued = IdleWhileQueued((EPOCH_S, EPOCH_S))
        self.pending_jobs: dict[int, _Pending] = {}  # jobs not sent to a provider yet
        self.messages = 0  # protocol frames: holds and their answers, requests, acceptances, results
        self.refusals = 0
        self.queued: set[int] = set()  # jobs that waited: in a queue, or for the slot they got
        self._last_arrival = EPOCH_S
        for p in providers:
            p.load.listeners.append(lambda free, queued, p=p: self._load_changed(p))
            self._publish(p)
            self.clock.at(EPOCH_S + ADVERT_REFRESH_S, lambda p=p: self._refresh(p))

    # adverts

    def _advert(self, p: Provider) -> ProviderAdvert:
        self.sequence[p.address] += 1
        now_ms = int(self.clock.now * 1000)
        free = LIAR_FREE_SLOTS if p.liar else p.load.free_slots
        claimed_ms = 1.0 if p.liar else p.mean_ms
        return ProviderAdvert(
            address=p.address,
            peer_id=f"peer-{p.n}",
            listen_addrs=(),
            offer=Offer(
                devices=(Device(DeviceKind.CUDA, "gpu", 2**34),),
                warm_models=(MODEL,),
                prices=(ModelPrice(MODEL, PRICE_WEI),),
                free_slots=free,
                queued=0 if p.liar else p.load.backlog,
                benchmarks=(Benchmark(MODEL, 0, 1000 / claimed_ms * (1 if p.liar else p.slots), claimed_ms),),
            ),
            sequence=self.sequence[p.address],
            issued_at_ms=now_ms,
            expires_at_ms=now_ms + int(ADVERT_TTL_S * 1000),
        )

    def _publish(self, p: Provider) -> None:
        advert = self._advert(p)
        offer = advert.offer
        self.publications[p.address].announced(offer.free_slots - offer.queued, self.clock.now)
        for directory in self.directories:
            delay = self.rng.uniform(*GOSSIP_MS) / 1000
            self.clock.at(self.clock.now + delay, lambda d=directory: d.upsert(advert))

    def _refresh(self, p: Provider) -> None:
        if self.clock.now < self._last_arrival:  # later, nobody chooses any more
            self._publish(p)
            self.clock.at(self.clock.now + ADVERT_REFRESH_S, lambda: self._refresh(p))

    def _load_changed(self, p: Provider) -> None:
        if p.liar or p.address in self.pending:
            return
        due = self.publications[p.address].due(p.load.free_slots - p.load.backlog, self.clock.now)
        if due is None:
            return
        if due <= self.clock.now:
            self._publish(p)
            return
        self.pending.add(p.address)

        def paced() -> None:
            self.pending.discard(p.address)
            self._publish(p)  # whatever the load is by now: changes in between are coalesced

        self.clock.at(due, paced)

    # jobs

    def submit(self, job: Job, tried: frozenset[Address] = frozenset()) -> None:
        """One attempt, as the client pipeline makes it: ask a few good providers at once to hold
        the job a slot; the first to grant one gets it, the other holds are given up. When every
        provider asked refuses to hold it, the job queues where the node's `place` puts it."""
        client = self.clients[job.client]
        choices = client.holds(MODEL, PRICE_WEI, tried=tried)
        holders = [self.by_address[c.candidate.address] for c in choices]
        pending = _Pending(job, live=len(holders), fastest_ms=min(p.mean_ms for p in holders))
        self.pending_jobs[job.n] = pending
        for p in holders:
            self.messages += 1  # the hold request
            self.clock.at(
                self.clock.now + job.send_s, lambda p=p: self._hold_arrives(p, pending, len(holders))
            )

    def _hold_arrives(self, p: Provider, pending: _Pending, copies: int) -> None:
        job = pending.job
        if pending.placed is not None:
            return  # the client gave it up on its way
        self._account()
        # As a provider's `HoldDesk` does: due once one more job sent without a hold has started.
        due = p.load.unheld_starts + p.load.queued + 1
        asked = p.holds.ask(_key(job), copies=copies, now=self.clock.now, due=due)
        if isinstance(asked, Rejected):
            self.messages += 1  # the refusal
            self.refusals += 1
            self.clock.at(self.clock.now + job.accept_s, lambda: self._hold_refused(pending))
            return
        pending.queued += 1
        pending.waiting_at.add(p.address)
        self._grant(p)
        if p.holds.is_waiting(_key(job)):
            pending.queued_at.add(p.address)
            self.messages += 1  # "queued behind `asked`"
            self.clock.at(
                self.clock.now + job.accept_s,
                lambda: self.clients[job.client].waited(p.address, asked),
            )

    def _hold_refused(self, pending: _Pending) -> None:
        pending.live -= 1
        if pending.live == 0 and pending.placed is None:
            self._queue(pending)

    def _grant(self, p: Provider) -> bool:
        """Grant the oldest waiting holds the free slots (a liar grants every hold at once)."""
        self._account()
        load = p.load
        free = p.holds.waiting if p.liar else load.slots - load.active - load.reserved - p.holds.granted
        granted = p.holds.grant(free, self.clock.now, started=load.unheld_starts)
        for key in granted:
            pending = self.pending_jobs[int.from_bytes(key[1], "big")]
            pending.queued -= 1
            pending.waiting_at.discard(p.address)
            self.messages += 1  # "ready"
            self.clock.at(
                self.clock.now + pending.job.accept_s, lambda p=p, pending=pending: self._ready(p, pending)
            )
        self._holding_changed(p)
        return bool(granted)

    def _holding_changed(self, p: Provider) -> None:
        p.load.holding(0 if p.liar else p.holds.granted, p.holds.awaited(p.slots))

    def _ready(self, p: Provider, pending: _Pending) -> None:
        job = pending.job
        self.messages += 1  # the job request, or giving the slot back
        if pending.placed is not None:
            self.clock.at(self.clock.now + job.send_s, lambda: self._give_up(p, pending))
            return
        self._account()
        pending.placed = p.address
        if p.address in pending.queued_at:
            self.queued.add(job.n)  # the slot it got was waited for
        for other in pending.waiting_at:
            self.messages += 1  # giving the other holds up
            self.clock.at(
                self.clock.now + job.send_s, lambda o=other: self._give_up(self.by_address[o], pending)
            )
        self._send(pending, p, held=True)

    def _give_up(self, p: Provider, pending: _Pending) -> None:
        p.holds.cancel(_key(pending.job))
        self._grant(p)

    def _queue(self, pending: _Pending) -> None:
        """Every provider asked refused to hold the job: it queues where `place` puts it."""
        self._account()
        client = self.clients[pending.job.client]
        choice = client.choose(MODEL, PRICE_WEI)
        p = self.by_address[choice.candidate.address]
        pending.placed = p.address
        self.messages += 1  # the job request
        self._send(pending, p, held=False)

    def _send(self, pending: _Pending, p: Provider, *, held: bool) -> None:
        job = pending.job
        client = self.clients[job.client]
        job_id = Hash32(job.n.to_bytes(32, "big"))
        sent = self.clock.now
        client.assigned(job_id, p.address)

        def delivered() -> None:
            client.succeeded(p.address, (self.clock.now - sent) * 1000, job_id=job_id)
            client.released(job_id)
            self.latency[job.n] = self.clock.now - job.arrival

        def arrives() -> None:
            self._account()
            # A slot kept for it is its own (unless its time ran out: then it came as any job).
            in_slot = held and p.holds.take(_key(job))
            if in_slot:
                p.load.reserve()
                self._holding_changed(p)
            self.pending_jobs.pop(job.n, None)
            snapshot = p.load.snapshot(reserved_for_it=in_slot)
            admitted = admit(JobOffer(MODEL, PRICE_WEI, 1), snapshot, self.policy[p.address])
            if isinstance(admitted, Rejected):
                raise RuntimeError(f"provider {p.n} refused a job: {admitted.reason}")
            self.messages += 2  # the acceptance and the result
            position = 0 if p.liar else admitted.queue_position
            if p.load.active >= p.slots:
                self.queued.add(job.n)
            self.clock.at(self.clock.now + job.accept_s, lambda: client.accepted(job_id, position))
            p.load.started(reserved=in_slot)
            if p.load.active <= p.slots:
                self._start(p, job, delivered)
            else:
                p.waiting.append((job, delivered))

        self.clock.at(self.clock.now + job.send_s, arrives)

    def _start(self, p: Provider, job: Job, delivered: Callable[[], None]) -> None:
        def finished() -> None:
            self._account()
            p.served += 1
            p.load.finished()
            if p.waiting:
                self._start(p, *p.waiting.popleft())
            else:
                self._grant(p)
            self.clock.at(self.clock.now + job.result_s, delivered)

        self.clock.at(self.clock.now + p.mean_ms * job.size / 1000, finished)

    def _account(self) -> None:
        # A liar's free slots are not there to take: it queues every job it gets. A job waits
        # between providers while every hold of it sits in a queue (none granted or in transit).
        self.idle_while_queued.account(
            self.clock.now,
            ((p.mean_ms, p.load.queued > 0, p.load.free_slots > 0 and not p.liar) for p in self.providers),
            (
                j.fastest_ms
                for j in self.pending_jobs.values()
                if j.placed is None and j.live and j.queued == j.live
            ),
        )

    def run(self, jobs: list[Job], measured: list[Job]) -> None:
        self.idle_while_queued = IdleWhileQueued((measured[0].arrival, measured[-1].arrival))
        self._last_arrival = jobs[-1].arrival
        for job in jobs:
            self.clock.at(job.arrival, lambda job=job: self.submit(job))
        self.clock.run()


# the ideal ------------------------------------------------------------------------------------------


def ideal_market(
    providers: list[Provider], jobs: list[Job], measured: list[Job]
) -> tuple[dict[int, float], IdleWhileQueued, set[int]]:
    """Join the shortest expected delay, seeing every provider's queue as the job arrives: each
    job's latency, the time providers idled while others queued, and the jobs that queued."""
    clock = Clock()
    idle_while_queued = IdleWhileQueued((measured[0].arrival, measured[-1].arrival))
    active = [0] * len(providers)  # sent there and not finished: what the scheduler sees
    running = [0] * len(providers)
    waiting: list[deque[Job]] = [deque() for _ in providers]
    latency: dict[int, float] = {}
    queued: set[int] = set()

    def expected_s(i: int, job: Job) -> float:
        p = providers[i]
        ahead = max(0, active[i] - p.slots + 1)
        return job.send_s + p.mean_ms / 1000 * (1 + ahead / p.slots) + job.result_s

    def account() -> None:
        idle_while_queued.account(
            clock.now,
            ((p.mean_ms, bool(waiting[i]), running[i] < p.slots) for i, p in enumerate(providers)),
        )

    def start(i: int, job: Job) -> None:
        running[i] += 1

        def finished() -> None:
            account()
            active[i] -= 1
            running[i] -= 1
            if waiting[i]:
                start(i, waiting[i].popleft())
            latency[job.n] = clock.now + job.result_s - job.arrival

        clock.at(clock.now + providers[i].mean_ms * job.size / 1000, finished)

    def submit(job: Job) -> None:
        i = min(range(len(providers)), key=lambda i: expected_s(i, job))
        active[i] += 1

        def arrives() -> None:
            account()
            if running[i] < providers[i].slots:
                start(i, job)
            else:
                waiting[i].append(job)
                queued.add(job.n)

        clock.at(clock.now + job.send_s, arrives)

    for job in jobs:
        clock.at(job.arrival, lambda job=job: submit(job))
    clock.run()
    return latency, idle_while_queued, queued


# figures -----------------------------------------------------------------------------------------


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@dataclass(frozen=True, slots=True)
class LoadResult:
    mean_ratio: float
    p99_ratio: float
    idle_while_queued: float
    idle_while_queued_ideal: float
    max_share_equal: float
    liar_share: float
    messages_per_job: float
    refusals_per_job: float  # holds refused
    queued_share: float
    queued_share_ideal: float


def simulate(load: float, jobs_count: int, seed: int, liars: int) -> LoadResult:
    rng = random.Random(f"{seed}/{load}")
    providers = make_providers(liars)
    honest_capacity = capacity_per_s([p for p in providers if not p.liar])
    jobs = make_jobs(jobs_count, load * honest_capacity, rng)
    measured = jobs[int(len(jobs) * WARMUP_SHARE) :]
    market = Market(providers, rng)
    market.run(jobs, measured)
    ideal, ideal_idle, ideal_queued = ideal_market(make_providers(liars), jobs, measured)
    ours = [market.latency[j.n] for j in measured]
    best = [ideal[j.n] for j in measured]
    shares = []
    for mean_ms, slots, _ in CLASSES:
        peers = [p.served for p in providers if (p.mean_ms, p.slots) == (mean_ms, slots) and not p.liar]
        if peers and (equal := statistics.mean(peers)) > 0:  # none got a job: all equal
            shares.extend(s / equal for s in peers)
    liar_jobs = sum(p.served for p in providers if p.liar)
    return LoadResult(
        mean_ratio=statistics.mean(ours) / statistics.mean(best),
        p99_ratio=p99(ours) / p99(best),
        idle_while_queued=market.idle_while_queued.share,
        idle_while_queued_ideal=ideal_idle.share,
        max_share_equal=max(shares),
        liar_share=liar_jobs / max(1, liars) / (len(jobs) / len(providers)),
        messages_per_job=market.messages / len(jobs),
        refusals_per_job=market.refusals / len(jobs),
        queued_share=sum(1 for j in measured if j.n in market.queued) / len(measured),
        queued_share_ideal=sum(1 for j in measured if j.n in ideal_queued) / len(measured),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per load level")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--liars", type=int, default=0, help="slow providers that lie about their load")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.jobs < 100:
        parser.error("--jobs must be at least 100")
    slow = CLASSES[-1][2]
    if not 0 <= args.liars <= slow:
        parser.error(f"--liars must be between 0 and {slow}")
    results = {load: simulate(load, args.jobs, args.seed, args.liars) for load in LOADS}
    reported = results[REPORTED_LOAD]
    figures: dict[str, object] = {
        "mean_latency_vs_ideal": {str(k): round(r.mean_ratio, 3) for k, r in results.items()},
        "p99_latency_vs_ideal": {str(k): round(r.p99_ratio, 3) for k, r in results.items()},
        "idle_while_queued": round(reported.idle_while_queued, 4),
        "idle_while_queued_ideal": round(reported.idle_while_queued_ideal, 4),
        "max_share_equal_providers": round(reported.max_share_equal, 3),
        "messages_per_job": {str(k): round(r.messages_per_job, 3) for k, r in results.items()},
        "refusals_per_job": {str(k): round(r.refusals_per_job, 3) for k, r in results.items()},
        "queued_share": {str(k): round(r.queued_share, 3) for k, r in results.items()},
        "queued_share_ideal": {str(k): round(r.queued_share_ideal, 3) for k, r in results.items()},
    }
    if args.liars:
        figures["liar_share_vs_equal"] = round(reported.liar_share, 3)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
