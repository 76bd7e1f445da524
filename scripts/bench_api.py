"""What the gRPC API costs: unary call round trip, a job through the API versus through the façade,
and model upload throughput, on loopback against real nodes (embedded chain, one provider with the
sandboxed executor, one client), all started in this process.

    .venv/bin/python scripts/bench_api.py            # a table
    .venv/bin/python scripts/bench_api.py --json     # one JSON object

--json prints {"rpc_p50_ms", "rpc_p99_ms", "rpc_calls_per_s", "job_api_p50_ms", "job_direct_p50_ms",
"api_overhead_per_job_ms", "upload_mib_per_s"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.api.client import ApiClient
from node.app import Node
from node.config import ApiSettings
from node.devnet import Marketplace, make_builtin_model
from node.devnet.marketplace import PRICE_WEI
from node.domain.service import JobSpec, NodeServices
from node.logging import configure_logging


@dataclass
class Bench:
    client: Node
    provider: Node
    model_id: str
    upload_dir: Path


@asynccontextmanager
async def marketplace(root: Path) -> AsyncIterator[Bench]:
    async with Marketplace.open(root) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        await asyncio.to_thread(make_builtin_model, root / "upload", hidden=1024)
        api = ApiSettings(listen="127.0.0.1:0", grace_s=0.5)
        client_settings = market.settings("client", provider=False, api=api)
        client = await stack.enter_async_context(
            market.node(client_settings, keys[8], serve_api=True, redemption=None).running()
        )
        provider_key = keys[1]
        await market.register(provider_key)
        provider_settings = market.settings(
            "provider", provider=True, bootstrap=[client.host.addrs[0]], api=api
        )
        provider = await stack.enter_async_context(
            market.node(provider_settings, provider_key, serve_api=True, redemption=None).running()
        )
        await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60.0)
        await client.client_jobs.deposit(10**18)
        model_id = market.model_id
        yield Bench(client, provider, model_id, root / "upload")


def _input(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((2, 64), dtype=np.float32)}))


async def _timed(times: list[float], work: Callable[[], Awaitable[object]]) -> None:
    start = time.perf_counter()
    await work()
    times.append((time.perf_counter() - start) * 1000)


async def _job_via_api(api: ApiClient, model_id: str, seed: int) -> None:
    job = await api.submit_job(JobSpec(model_id=model_id, input=_input(seed), max_price_wei=PRICE_WEI))
    async for _ in api.watch_job(job.job_id, omit_output=True):
        pass


async def _job_direct(services: NodeServices, model_id: str, seed: int) -> None:
    job = await services.jobs.submit(JobSpec(model_id=model_id, input=_input(seed), max_price_wei=PRICE_WEI))
    async for _ in services.jobs.watch(job.job_id):
        pass


def _p(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


async def measure(calls: int, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with marketplace(Path(tmp)) as bench:
            client_api = await ApiClient.connect(bench.client.api.address)
            provider_api = await ApiClient.connect(bench.provider.api.address)
            async with client_api, provider_api:
                await _job_via_api(client_api, bench.model_id, 0)  # warm every path once
                job_id = (await client_api.list_jobs())[0].job_id
                rpc: list[float] = []
                started = time.perf_counter()
                for _ in range(calls):
                    await _timed(rpc, lambda: client_api.get_job(job_id, with_output=False))
                rpc_rate = calls / (time.perf_counter() - started)
                via_api: list[float] = []
                direct: list[float] = []
                for seed in range(1, jobs + 1):
                    await _timed(via_api, lambda s=seed: _job_via_api(client_api, bench.model_id, s))
                    await _timed(
                        direct, lambda s=seed: _job_direct(bench.client.services, bench.model_id, 10**6 + s)
                    )
                size = sum(p.stat().st_size for p in bench.upload_dir.iterdir())
                start = time.perf_counter()
                await provider_api.upload_model_dir(bench.upload_dir)
                upload_s = time.perf_counter() - start
    api_p50, direct_p50 = statistics.median(via_api), statistics.median(direct)
    return {
        "rpc_p50_ms": round(statistics.median(rpc), 3),
        "rpc_p99_ms": round(_p(rpc, 99), 3),
        "rpc_calls_per_s": round(rpc_rate, 1),
        "job_api_p50_ms": round(api_p50, 2),
        "job_direct_p50_ms": round(direct_p50, 2),
        "api_overhead_per_job_ms": round(api_p50 - direct_p50, 2),
        "upload_mib_per_s": round(size / upload_s / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500, help="GetJob calls to time")
    parser.add_argument("--jobs", type=int, default=20, help="jobs through each path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    configure_logging("WARNING")
    figures = asyncio.run(measure(args.calls, args.jobs))
    if args.json:
        print(json.dumps(figures))
        return 0
    labels = {
        "rpc_p50_ms": "GetJob round trip p50 (ms)",
        "rpc_p99_ms": "GetJob round trip p99 (ms)",
        "rpc_calls_per_s": "GetJob calls/s, one client",
        "job_api_p50_ms": "job submit→settled via gRPC p50 (ms)",
        "job_direct_p50_ms": "job submit→settled via the façade p50 (ms)",
        "api_overhead_per_job_ms": "gRPC cost per job (ms)",
        "upload_mib_per_s": "model upload (MiB/s)",
    }
    for key, label in labels.items():
        print(f"{label:<45} {figures[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
