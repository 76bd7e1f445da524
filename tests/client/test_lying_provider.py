"""A provider that lies in its advert about free slots and run time, and about its queue when it
accepts jobs, does not capture the market: what the client observes overrides the claims."""

from __future__ import annotations

import random

from node.client.matching import Matchmaker
from node.discovery.advert import Benchmark, Device, DeviceKind, ModelPrice, Offer, ProviderAdvert
from node.discovery.directory import Directory
from node.types import Address, Hash32

MODEL = Hash32(b"\x09" * 32)
START = 1_800_000_000.0
HONEST = [Address(f"0x{n:040x}") for n in range(1, 5)]
LIAR = Address(f"0x{99:040x}")
HONEST_RUN_S = 1.0
LIAR_RUN_S = 4.0


def advert(
    address: Address, now: float, sequence: int, *, free: int, run_ms: float, per_s: float
) -> ProviderAdvert:
    now_ms = int(now * 1000)
    return ProviderAdvert(
        address=address,
        peer_id=f"peer-{address[-2:]}",
        listen_addrs=(),
        offer=Offer(
            devices=(Device(DeviceKind.CUDA, "gpu", 2**34),),
            warm_models=(MODEL,),
            prices=(ModelPrice(MODEL, 100),),
            free_slots=free,
            benchmarks=(Benchmark(MODEL, 0, per_s, run_ms),),
        ),
        sequence=sequence,
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + 120_000,
    )


def test_cannot_capture_jobs_by_lying_about_free_slots_run_time_and_queue() -> None:
    now = START
    directory = Directory(clock=lambda: now)
    client = Matchmaker(directory, rng=random.Random(4), clock=lambda: now)
    running: dict[Address, list[float]] = {a: [] for a in HONEST}  # finish times per honest provider
    liar_free_at = START
    due: list[tuple[float, Address, Hash32]] = []  # (result arrives, provider, job)
    to_liar: list[float] = []
    first_liar_result: float | None = None
    for tick in range(400):  # a job every 0.25 s for 100 s: half the honest providers' capacity
        now = START + tick * 0.25
        for done in [d for d in due if d[0] <= now]:
            due.remove(done)
            at, provider, job = done
            client.succeeded(provider, (at - float(int.from_bytes(job[:8], "big")) / 1000) * 1000, job_id=job)
            client.released(job)
            if provider == LIAR and first_liar_result is None:
                first_liar_result = at
        for address in HONEST:
            running[address] = [t for t in running[address] if t > now]
            free = 2 - len(running[address])
            directory.upsert(advert(address, now, tick + 1, free=free, run_ms=1000, per_s=2))
        # Attacker, every 2 s: a fresh advert claiming 64 free slots, 1 ms a job, 1,000 jobs/s.
        if tick % 8 == 0:
            directory.upsert(advert(LIAR, now, tick + 1, free=64, run_ms=1.0, per_s=1000))
        job = Hash32(int(now * 1000).to_bytes(8, "big") + tick.to_bytes(24, "big"))
        provider = client.choose(MODEL, 1_000).candidate.address
        client.assigned(job, provider)
        # Every acceptance says "starting now": the attacker hides its queue.
        client.accepted(job, 0)
        if provider == LIAR:
            to_liar.append(now)
            # The attacker's one slot runs its jobs one after another.
            liar_free_at = max(now, liar_free_at) + LIAR_RUN_S
            due.append((liar_free_at, LIAR, job))
        else:
            finish = now + HONEST_RUN_S
            running[provider].append(finish)
            due.append((finish, provider, job))
    # It gets a try while it is unknown, never a second job while one of ours waits there, and
    # none once its real latency is observed: no market captured.
    assert 1 <= len(to_liar) <= 3, to_liar
    assert first_liar_result is not None
    assert all(t <= first_liar_result for t in to_liar)
