"""Overlay benchmarks on loopback: advert propagation, job round trip, blob throughput.

    python scripts/bench_p2p.py            # human-readable figures
    python scripts/bench_p2p.py --json     # {"propagation": {"10": {...}, ...}, "rtt_p50_ms": ..., ...}

Every node is a real libp2p host (TCP, Noise, yamux) in a process of its own (scripts/bench_node.py);
providers are registered on a real anvil chain and every advert is fully validated, registry check
included (each node warms its registry cache before timing, so the figures measure the overlay
rather than RPC round trips). All nodes share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account.signers.local import LocalAccount

from node.chain.anvil import AnvilProcess
from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.keys import NodeKey
from node.config import ChainSettings, P2PSettings
from node.logging import configure_logging
from node.p2p.blob_protocol import fetch_blob, serve_blobs
from node.p2p.blob_store import MemoryBlobStore
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

NODE_SCRIPT = Path(__file__).with_name("bench_node.py")


class NodeProcess:
    """One overlay node in its own process (scripts/bench_node.py): nodes of a real overlay do
    not share an interpreter, so they must not share a GIL here either."""

    def __init__(
        self, process: asyncio.subprocess.Process, arrivals: dict[tuple[str, int], list[float]]
    ) -> None:
        self.process = process
        self.arrivals = arrivals
        self.replies: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(
        cls,
        key: NodeKey,
        rpc_url: str,
        registry: str,
        peers_file: Path,
        arrivals: dict[tuple[str, int], list[float]],
    ) -> NodeProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE_SCRIPT),
            "--key",
            key.private_key.hex(),
            "--rpc-url",
            rpc_url,
            "--registry",
            registry,
            "--peers-file",
            str(peers_file),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, arrivals)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            event = json.loads(line)
            if "seen" in event:
                self.arrivals.setdefault((event["seen"], event["seq"]), []).append(event["t"])
            else:
                await self.replies.put(event)

    async def send(self, **command: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def request(self, **command: object) -> dict[str, object]:
        await self.send(**command)
        return await asyncio.wait_for(self.replies.get(), 120)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.send(cmd="quit")
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.reader.cancel()


async def registered_keys(
    rpc_url: str, accounts: list[LocalAccount], count: int
) -> tuple[ChainClient, str, list[NodeKey]]:
    settings = ChainSettings(rpc_url=rpc_url, receipt_timeout_s=60.0, poll_interval_s=0.05)
    client = await ChainClient.connect(settings)
    deployment = await deploy_contracts(
        client,
        accounts[0],
        min_stake=MIN_STAKE,
        unstake_cooldown_s=3600,
        challenge_window_s=600,
        withdrawal_delay_s=600,
    )
    keys = [NodeKey.generate() for _ in range(count)]
    for i, key in enumerate(keys):
        await client.transfer(key.address, 2 * MIN_STAKE, sender=accounts[1 + i % (len(accounts) - 1)])
        peer_id = peer_id_to_bytes(str(peer_id_from(key)))
        await deployment.registry.register(peer_id, sha256(b"bench"), stake=MIN_STAKE, sender=key.account)
    return client, deployment.registry.address, keys


async def start_overlay(
    keys: list[NodeKey],
    rpc_url: str,
    registry: str,
    workdir: Path,
    arrivals: dict[tuple[str, int], list[float]],
) -> list[NodeProcess]:
    peers_file = workdir / "peers.txt"
    peers_file.write_text("\n".join(k.address for k in keys))
    nodes = [await NodeProcess.spawn(k, rpc_url, registry, peers_file, arrivals) for k in keys]
    ready = [await n.replies.get() for n in nodes]
    addrs = [str(r["addr"]) for r in ready]
    rng = random.Random(7)
    # Node 0 bootstraps everybody; each node also knows two random earlier nodes.
    for i, node in enumerate(nodes[1:], start=1):
        targets = sorted({0, *rng.sample(range(i), min(i, 2))})
        await node.request(cmd="connect", addrs=[addrs[t] for t in targets])
    want = min(4, len(keys) - 1)
    async with asyncio.timeout(120):
        for node in nodes:
            while True:
                state = await node.request(cmd="topic_peers")
                if int(state["topic_peers"]) >= min(want, int(state["connected"])):  # type: ignore[call-overload]
                    break
                await asyncio.sleep(0.1)
    # Two heartbeats for every mesh to graft up to its target degree.
    await asyncio.sleep(2.5)
    return nodes


async def measure_advert(
    nodes: list[NodeProcess],
    keys: list[NodeKey],
    publisher: int,
    arrivals: dict[tuple[str, int], list[float]],
) -> tuple[list[float], int]:
    reply = await nodes[publisher].request(cmd="announce")
    key = (keys[publisher].address, int(reply["announced"]))  # type: ignore[call-overload]
    started = float(reply["t"])  # type: ignore[arg-type]
    expected = len(nodes)  # the publisher's own directory counts itself too
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while len(arrivals.get(key, [])) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    times = [(t - started) * 1000 for t in arrivals.get(key, [])]
    # Drop the publisher's own (local) arrival: the figure is delivery to the other peers.
    times.sort()
    return times[1:], expected - 1


async def propagation(size: int, anvil: AnvilProcess, workdir: Path) -> dict[str, float]:
    client, registry, keys = await registered_keys(anvil.rpc_url, anvil.accounts, size)
    arrivals: dict[tuple[str, int], list[float]] = {}
    nodes: list[NodeProcess] = []
    try:
        nodes = await start_overlay(keys, anvil.rpc_url, registry, workdir, arrivals)
        samples: list[float] = []
        expected = 0
        for publisher in random.Random(size).sample(range(size), min(ADVERTS_PER_SIZE, size)):
            delivered, receivers = await measure_advert(nodes, keys, publisher, arrivals)
            samples += delivered
            expected += receivers
            await asyncio.sleep(0.2)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
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
    async with AnvilProcess(accounts=20) as anvil:
        for size in sizes:
            with tempfile.TemporaryDirectory() as workdir:
                figures = await propagation(size, anvil, Path(workdir))
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
