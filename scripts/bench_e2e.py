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
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.app import Node
from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.keys import NodeKey
from node.config import (
    ChainSettings,
    ExecutorSettings,
    P2PSettings,
    ProviderSettings,
    Settings,
    StorageSettings,
)
from node.executor.store import ModelStore
from node.jobs.service import JobSpec
from node.jobs.state import JobState
from node.logging import configure_logging
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.settlement.policy import RedemptionPolicy
from node.types import Hash32, sha256

MIN_STAKE = 10**18
PRICE_WEI = 10**12


def make_model(out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "node.executor.builtin_models", "mlp", "--out", str(out)],
        check=True,
        capture_output=True,
    )


def job_input(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((2, 64), dtype=np.float32)}))


def settings_for(
    home: Path, chain: ChainSettings, *, provider: bool, bootstrap: list[str], synchronous: str
) -> Settings:
    return Settings(
        home=home,
        log_level="WARNING",
        chain=chain,
        p2p=P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], bootstrap=bootstrap, advert_refresh_s=2.0),
        executor=ExecutorSettings(model_dir=home / "models", max_batch_wait_ms=0.0),
        storage=StorageSettings(url=f"sqlite:///{home / 'gpunode.db'}?synchronous={synchronous}"),
        provider=ProviderSettings(enabled=provider, price_per_job_wei=PRICE_WEI, stake_wei=MIN_STAKE),
    )


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
    chain = await ChainClient.connect(ChainSettings(rpc_url="embedded"))
    try:
        accounts = chain.dev_accounts()
        deployment = await deploy_contracts(
            chain,
            accounts[0],
            min_stake=MIN_STAKE,
            unstake_cooldown_s=60,
            challenge_window_s=60,
            withdrawal_delay_s=60,
        )
        chain_settings = ChainSettings(
            rpc_url="embedded",
            registry_address=deployment.registry.address,
            market_address=deployment.market.address,
        )
        keys = [NodeKey.from_private_key(bytes(a.key)) for a in accounts]
        source = root / "model"
        await asyncio.to_thread(make_model, source)
        async with AsyncExitStack() as stack:
            client = Node(
                settings_for(
                    root / "client",
                    chain_settings,
                    provider=False,
                    bootstrap=[],
                    synchronous=args.synchronous,
                ),
                key=keys[9],
                shared_chain=chain,
                serve_api=False,
            )
            await stack.enter_async_context(client.running())
            providers = []
            model_id = ""
            for i in range(args.providers):
                key = keys[1 + i]
                await deployment.registry.register(
                    peer_id_to_bytes(str(peer_id_from(key))),
                    sha256(b"bench"),
                    stake=MIN_STAKE,
                    sender=key.account,
                )
                settings = settings_for(
                    root / f"provider{i}",
                    chain_settings,
                    provider=True,
                    bootstrap=[client.host.addrs[0]],
                    synchronous=args.synchronous,
                )
                store = ModelStore(settings.executor.model_dir, settings.executor.model_cache_bytes)
                model_id = store.import_dir(source).model_id
                node = Node(
                    settings,
                    key=key,
                    shared_chain=chain,
                    serve_api=False,
                    redemption=RedemptionPolicy(min_amount_wei=10**30, min_vouchers=10**9),
                )
                providers.append(await stack.enter_async_context(node.running()))
            await client.discovery.directory.wait_for(lambda d: len(d) >= args.providers, timeout_s=60)
            await client.client_jobs.deposit(10**18)
            await latency(client, providers, model_id, args.warmup, 0)
            overheads = await latency(client, providers, model_id, args.jobs, 10_000)
            rate = await throughput(client, model_id, args.burst, 20_000)
    finally:
        await chain.close()
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
