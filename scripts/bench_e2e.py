"""Marketplace overhead per job and jobs/s, end to end on loopback with warm models.

Starts an embedded chain with the contracts, `--providers` provider nodes and a client node in
this process (real libp2p on 127.0.0.1, the sandboxed executor, SQLite), warms the built-in MLP,
then:

- latency: `--jobs` voucher-paid jobs one after the other; each job's end-to-end time is from
  `submit()` to its `settled` state as the client's watch sees it; the overhead is that minus the
  seconds the executor spent running it (measured by the provider around the sandboxed run);
- throughput: `--burst` jobs submitted at once, jobs/s from the first submit to the last settled.

    .venv/bin/python scripts/bench_e2e.py [--providers 1] [--jobs 200] [--burst 200]
                                          [--synchronous normal|full] [--json]

`--synchronous` is each node's SQLite durability (`storage.url`'s `?synchronous=`): `normal`, the
node's default, survives a crash of the node; `full` also a power cut, at an fsync per commit.

With `--json` it prints exactly {"overhead_p50_ms": x, "overhead_p99_ms": x, "jobs_per_s": x}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.app import Node
from node.config import Settings
from node.devnet.marketplace import PRICE_WEI, Marketplace
from node.jobs.service import JobSpec
from node.jobs.state import JobState
from node.logging import configure_logging
from node.types import Hash32


def job_input(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((2, 64), dtype=np.float32)}))


async def run_until(node: Node, job_id: str) -> JobState:
    async for view in node.services.jobs.watch(job_id):
        if view.terminal:
            return view.state
    raise RuntimeError(f"job {job_id} stopped being watched before it finished")


def execution_s(providers: list[Node], job_id: str) -> float:
    key = Hash32(bytes.fromhex(job_id))
    for provider in providers:
        if provider.provider is not None and key in provider.provider.runner.run_seconds:
            return provider.provider.runner.run_seconds[key]
    raise RuntimeError(f"no provider ran job {job_id}")


async def latency(
    client: Node, providers: list[Node], model_id: str, jobs: int, first_seed: int
) -> list[float]:
    overheads = []
    for i in range(jobs):
        started = time.perf_counter()
        view = await client.services.jobs.submit(JobSpec(model_id=model_id, input=job_input(first_seed + i)))
        state = await run_until(client, view.job_id)
        elapsed = time.perf_counter() - started
        if state is not JobState.SETTLED:
            raise RuntimeError(f"job {view.job_id} ended {state}")
        overheads.append((elapsed - execution_s(providers, view.job_id)) * 1000)
    return overheads


async def throughput(client: Node, model_id: str, burst: int, first_seed: int) -> float:
    started = time.perf_counter()
    views = await asyncio.gather(
        *(
            client.services.jobs.submit(JobSpec(model_id=model_id, input=job_input(first_seed + i)))
            for i in range(burst)
        )
    )
    states = await asyncio.gather(*(run_until(client, v.job_id) for v in views))
    elapsed = time.perf_counter() - started
    if any(s is not JobState.SETTLED for s in states):
        raise RuntimeError(f"{sum(s is not JobState.SETTLED for s in states)} burst jobs did not settle")
    return burst / elapsed


async def bench(args: argparse.Namespace, root: Path) -> dict[str, float]:
    async with Marketplace.open(root, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()

        def settings_for(name: str, *, provider: bool, bootstrap: list[str]) -> Settings:
            settings = market.settings(name, provider=provider, bootstrap=bootstrap)
            settings.storage.url += f"?synchronous={args.synchronous}"
            return settings

        client = market.node(settings_for("client", provider=False, bootstrap=[]), keys[9])
        await stack.enter_async_context(client.running())
        providers = []
        for i in range(args.providers):
            key = keys[1 + i]
            await market.register(key)
            # The providers redeem only when asked, so no redemption lands in the measurement.
            node = market.node(
                settings_for(f"provider{i}", provider=True, bootstrap=[client.host.addrs[0]]), key
            )
            providers.append(await stack.enter_async_context(node.running()))
        await client.discovery.directory.wait_for(lambda d: len(d) >= args.providers, timeout_s=60)
        await client.client_jobs.deposit(10**18)
        model_id = market.model_id
        await latency(client, providers, model_id, args.warmup, 0)
        overheads = await latency(client, providers, model_id, args.jobs, 10_000)
        rate = await throughput(client, model_id, args.burst, 20_000)
    quantiles = statistics.quantiles(overheads, n=100, method="inclusive")
    return {
        "overhead_p50_ms": round(quantiles[49], 3),
        "overhead_p99_ms": round(quantiles[98], 3),
        "jobs_per_s": round(rate, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=200, help="jobs timed one after the other")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200, help="jobs submitted at once for jobs/s")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="gpunode-bench-e2e-") as tmp:
        figures = asyncio.run(bench(args, Path(tmp)))
    if args.json:
        print(json.dumps(figures))
        return
    print(f"providers:               {args.providers} (loopback, warm built-in MLP, voucher payment)")
    print(f"sqlite synchronous:      {args.synchronous}")
    p50 = figures["overhead_p50_ms"]
    print(f"overhead p50 per job:    {p50:.2f} ms  (end to end minus execution; target <= 10 ms)")
    print(f"overhead p99 per job:    {figures['overhead_p99_ms']:.2f} ms")
    print(f"throughput:              {figures['jobs_per_s']:.1f} jobs/s ({args.burst} jobs at once)")


if __name__ == "__main__":
    main()
