"""Scheduling decisions per second at 10k providers.

Builds a seeded population of providers (50 models, 3-8 models each, mixed GPUs and CPU-only
hosts, some busy or backed off) and a pool of varied job requirements (budget, device kind,
memory, some reassignments with tried providers), then times `CandidateIndex.choose` on them
with the default exploration share. Generating the inputs is not timed; building the index is
timed and printed separately. For comparison it also times the scanning reference `rank`.

    .venv/bin/python scripts/bench_scheduler.py [--providers 10000] [--decisions 200000] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from node.scheduler import (
    CandidateIndex,
    Choice,
    DeviceOffer,
    JobRequirements,
    ModelOffer,
    ProviderCandidate,
    ProviderStats,
    rank,
)
from node.types import Address, Hash32

GIB = 2**30
MODELS = [Hash32(bytes([i]) * 32) for i in range(1, 51)]
GPUS = [("RTX 4090", 24 * GIB), ("A100", 40 * GIB), ("A100", 80 * GIB), ("H100", 80 * GIB), ("L4", 24 * GIB)]


def make_provider(i: int, rng: random.Random, now: float) -> ProviderCandidate:
    models = tuple(
        ModelOffer(model_id=m, price_wei=int(10**12 * rng.lognormvariate(0, 0.5)), warm=rng.random() < 0.3)
        for m in rng.sample(MODELS, rng.randint(3, 8))
    )
    if rng.random() < 0.2:
        devices: tuple[DeviceOffer, ...] = (DeviceOffer("cpu", "x86_64", 64 * GIB),)
    else:
        devices = tuple(DeviceOffer("cuda", *rng.choice(GPUS)) for _ in range(rng.randint(1, 8)))
    trials = rng.randint(0, 200)
    failures = int(trials * rng.random() * 0.2)
    stats = ProviderStats(
        successes=trials - failures,
        failures=failures,
        latency_ms=None if trials == 0 else rng.uniform(5, 400),
        backoff_until=now + 60 if rng.random() < 0.03 else 0.0,
    )
    return ProviderCandidate(
        address=Address(f"0x{i:040x}"),
        peer_id=f"peer-{i}",
        models=models,
        devices=devices,
        free_slots=rng.choice([0, 1, 1, 2, 4, 8]),
        throughput=rng.uniform(1, 500),
        stats=stats,
    )


def make_requests(
    n: int, rng: random.Random, providers: list[ProviderCandidate]
) -> list[tuple[JobRequirements, frozenset[Address]]]:
    requests = []
    for _ in range(n):
        requirements = JobRequirements(
            model_id=rng.choice(MODELS),
            # Budgets from well below the median price (most providers skipped) to generous.
            max_price_wei=int(10**12 * rng.uniform(0.3, 3.0)),
            device_kind=rng.choice(["cuda", "cuda", "cuda", "cpu", None]),
            min_memory_bytes=rng.choice([0, 16 * GIB, 24 * GIB, 40 * GIB, 80 * GIB]),
        )
        # One decision in five is a reassignment after one or two providers failed.
        tried = (
            frozenset(p.address for p in rng.sample(providers, rng.randint(1, 2)))
            if rng.random() < 0.2
            else frozenset()
        )
        requests.append((requirements, tried))
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--json", action="store_true", help='print only {"providers": N, "decisions_per_s": x}'
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    now = 1_800_000_000.0
    providers = [make_provider(i, rng, now) for i in range(1, args.providers + 1)]
    requests = make_requests(10_000, rng, providers)

    started = time.perf_counter()
    index = CandidateIndex.build(providers)
    build_s = time.perf_counter() - started

    choose_rng = random.Random(args.seed + 1)
    chosen = 0
    rounds: list[float] = []
    done = 0
    while done < args.decisions:
        batch = requests[: min(len(requests), args.decisions - done)]
        started = time.perf_counter()
        for requirements, tried in batch:
            if isinstance(index.choose(requirements, now=now, rng=choose_rng, tried=tried), Choice):
                chosen += 1
        rounds.append(len(batch) / (time.perf_counter() - started))
        done += len(batch)
    decisions_per_s = statistics.median(rounds)

    if args.json:
        print(json.dumps({"providers": args.providers, "decisions_per_s": round(decisions_per_s, 1)}))
        return

    scan = requests[:200]
    started = time.perf_counter()
    for requirements, tried in scan:
        rank(providers, requirements, now=now, tried=tried)
    scan_per_s = len(scan) / (time.perf_counter() - started)

    print(f"providers:               {args.providers}")
    print(f"index build:             {build_s * 1000:.0f} ms")
    print(f"decisions:               {done} ({chosen / done:.1%} found a provider)")
    print(
        f"decisions/s (indexed):   {decisions_per_s:,.0f}  (median of {len(rounds)} rounds; target >= 20,000)"
    )
    print(f"decisions/s (full scan): {scan_per_s:,.0f}")


if __name__ == "__main__":
    main()
