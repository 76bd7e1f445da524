"""Overlay benchmarks on loopback: advert propagation, job round trip, blob throughput.

    python scripts/bench_p2p.py            # human-readable figures
    python scripts/bench_p2p.py --json     # {"propagation": {"10": {...}, ...}, "rtt_p50_ms": ..., ...}

Every node is a real libp2p host (TCP, Noise, yamux) in this one process, each in its own trio
thread; providers are registered on a real embedded chain and every advert is fully validated,
registry check included (one registry cache shared by the nodes, warmed before timing, so the
figures measure the overlay rather than py-evm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.keys import NodeKey
from node.config import ChainSettings, P2PSettings
from node.discovery.advert import Device, DeviceKind, ModelPrice, Offer
from node.discovery.dht_records import dht_validators
from node.discovery.registry_view import CachedRegistryView
from node.discovery.service import DiscoveryService
from node.discovery.validation import AdvertValidator
from node.logging import configure_logging
from node.p2p.blob_protocol import fetch_blob, serve_blobs
from node.p2p.blob_store import MemoryBlobStore
from node.p2p.gossip import ADVERT_TOPIC
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.p2p.job_messages import JobAccepted, JobRequest, JobResponse, JobResult, OnchainPayment
from node.p2p.job_protocol import JobClient, serve_jobs
from node.types import Address, Hash32, ResultReceipt, sha256

MIN_STAKE = 10**18
MODEL = sha256(b"bench-model")
SIZES = (10, 25, 50)
ADVERTS_PER_SIZE = 10
DELIVERY_TIMEOUT_S = 5.0


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# propagation ----------------------------------------------------------------------------------


async def registered_keys(count: int) -> tuple[ChainClient, CachedRegistryView, list[NodeKey]]:
    client = await ChainClient.connect(ChainSettings(rpc_url="embedded", receipt_timeout_s=60.0))
    dev = client.dev_accounts()
    deployment = await deploy_contracts(
        client,
        dev[0],
        min_stake=MIN_STAKE,
        unstake_cooldown_s=3600,
        challenge_window_s=600,
        withdrawal_delay_s=600,
    )
    keys = [NodeKey.generate() for _ in range(count)]
    for i, key in enumerate(keys):
        await client.transfer(key.address, 2 * MIN_STAKE, sender=dev[1 + i % (len(dev) - 1)])
        peer_id = peer_id_to_bytes(str(peer_id_from(key)))
        await deployment.registry.register(peer_id, sha256(b"bench"), stake=MIN_STAKE, sender=key.account)
    registry = CachedRegistryView(deployment.registry, active_ttl_s=3600)
    for key in keys:
        await registry.is_active(key.address)
    return client, registry, keys


def offer() -> Offer:
    return Offer(
        devices=(Device(DeviceKind.CUDA, "bench gpu", 80 * 2**30, "9.0"),),
        warm_models=(MODEL,),
        prices=(ModelPrice(MODEL, 10**15),),
        free_slots=8,
    )


async def overlay(
    stack: AsyncExitStack, keys: list[NodeKey], registry: CachedRegistryView
) -> list[tuple[P2PHost, DiscoveryService]]:
    settings = P2PSettings(advert_refresh_s=3600, advert_ttl_s=600, read_timeout_s=10)
    nodes: list[tuple[P2PHost, DiscoveryService]] = []
    rng = random.Random(7)
    for i, key in enumerate(keys):
        host = await stack.enter_async_context(P2PHost.start(key, settings, dht_validators=dht_validators()))
        validator = AdvertValidator(registry, rate_per_s=10.0, rate_burst=20)
        discovery = await stack.enter_async_context(
            DiscoveryService.start(host, registry, settings, key=key, validator=validator)
        )
        # Node 0 bootstraps everybody; each node also knows two random earlier nodes.
        for target in {0, *rng.sample(range(i), min(i, 2))} - {i} if i else set():
            await host.connect(nodes[target][0].addrs[0])
        nodes.append((host, discovery))
    want = min(4, len(keys) - 1)
    async with asyncio.timeout(60):
        for host, _ in nodes:
            while len(await host.topic_peers(ADVERT_TOPIC)) < min(want, len(host.connected_peers())):
                await asyncio.sleep(0.05)
    # Two heartbeats for every mesh to graft up to its target degree.
    await asyncio.sleep(2.5)
    return nodes


async def measure_advert(
    nodes: list[tuple[P2PHost, DiscoveryService]], publisher: int
) -> tuple[list[float], int]:
    host, discovery = nodes[publisher]
    address = host.address
    receivers = [d for i, (_, d) in enumerate(nodes) if i != publisher]
    started = time.perf_counter()
    advert = await discovery.announce(offer())

    async def arrival(d: DiscoveryService) -> float | None:
        try:
            await d.directory.wait_for(
                lambda dir_: getattr(dir_.get(address), "sequence", 0) >= advert.sequence, DELIVERY_TIMEOUT_S
            )
        except TimeoutError:
            return None
        return (time.perf_counter() - started) * 1000

    times = await asyncio.gather(*(arrival(d) for d in receivers))
    delivered = [t for t in times if t is not None]
    return delivered, len(receivers)


async def propagation(size: int) -> dict[str, float]:
    client, registry, keys = await registered_keys(size)
    try:
        async with AsyncExitStack() as stack:
            nodes = await overlay(stack, keys, registry)
            samples: list[float] = []
            expected = 0
            for publisher in random.Random(size).sample(range(size), min(ADVERTS_PER_SIZE, size)):
                delivered, receivers = await measure_advert(nodes, publisher)
                samples += delivered
                expected += receivers
                await asyncio.sleep(0.2)
    finally:
        await client.close()
    return {
        "p50_ms": round(percentile(samples, 0.50), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "delivered": round(len(samples) / expected, 4) if expected else 0.0,
    }


# job round trip and blobs ---------------------------------------------------------------------

PROVIDER = Address("0x00000000000000000000000000000000000000B1")


async def echo(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
    yield JobAccepted()
    data = request.input if isinstance(request.input, bytes) else b""
    receipt = ResultReceipt(
        request.job_id, request.model_id, sha256(data), sha256(data), sha256(b"p"), PROVIDER
    )
    yield JobResult(receipt, b"\x01" * 65, data)


async def round_trips(count: int = 500, warmup: int = 50) -> list[float]:
    settings = P2PSettings(read_timeout_s=10)
    async with (
        P2PHost.start(os.urandom(32), settings) as provider,
        P2PHost.start(os.urandom(32), settings) as client,
    ):
        serve_jobs(provider, echo)
        await client.connect(provider.addrs[0])
        jobs = JobClient(client)
        samples = []
        for i in range(warmup + count):
            request = JobRequest(
                Hash32(os.urandom(32)),
                MODEL,
                b"x" * 64,
                OnchainPayment(Hash32(os.urandom(32))),
                10**15,
                int((time.time() + 60) * 1000),
            )
            started = time.perf_counter()
            outcome = await jobs.request_job(provider.peer_id, request)
            elapsed = (time.perf_counter() - started) * 1000
            if not isinstance(outcome, JobResult):
                raise SystemExit(f"job {i} did not succeed: {outcome}")
            if i >= warmup:
                samples.append(elapsed)
        return samples


async def blob_throughput(size: int = 50 * 10**6, rounds: int = 3) -> float:
    data = os.urandom(size)
    store = MemoryBlobStore()
    digest = store.put(data)
    settings = P2PSettings(read_timeout_s=30)
    async with (
        P2PHost.start(os.urandom(32), settings) as server,
        P2PHost.start(os.urandom(32), settings) as client,
    ):
        serve_blobs(server, store)
        await client.connect(server.addrs[0])
        rates = []
        for _ in range(rounds):
            started = time.perf_counter()
            fetched = await fetch_blob(client, server.peer_id, digest, max_size=size)
            rates.append(size / 1e6 / (time.perf_counter() - started))
            if fetched != data:
                raise SystemExit("blob came back different")
        return statistics.median(rates)


async def main(as_json: bool, sizes: tuple[int, ...]) -> None:
    results: dict[str, object] = {"propagation": {}}
    for size in sizes:
        figures = await propagation(size)
        results["propagation"][str(size)] = figures  # type: ignore[index]
        if not as_json:
            print(
                f"advert propagation to {size:>2} peers: p50 {figures['p50_ms']:.1f} ms, "
                f"p99 {figures['p99_ms']:.1f} ms, delivered {figures['delivered']:.1%}",
                flush=True,
            )
    rtts = await round_trips()
    results["rtt_p50_ms"] = round(percentile(rtts, 0.5), 3)
    results["rtt_p99_ms"] = round(percentile(rtts, 0.99), 3)
    if not as_json:
        print(
            f"job round trip, warm connection: p50 {results['rtt_p50_ms']} ms, p99 {results['rtt_p99_ms']} ms"
        )
    results["blob_mb_s"] = round(await blob_throughput(), 1)
    if as_json:
        print(json.dumps(results))
    else:
        print(f"blob throughput, 50 MB: {results['blob_mb_s']} MB/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="overlay sizes (default 10,25,50)")
    args = parser.parse_args()
    configure_logging("ERROR")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    asyncio.run(main(args.json, tuple(int(s) for s in args.sizes.split(","))))
