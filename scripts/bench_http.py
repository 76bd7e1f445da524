"""What the HTTP face costs: the same generation job through the OpenAI-compatible API and through
the node's façade, side by side (alternating), on loopback against real nodes — embedded chain, one
provider serving a tiny GPT-2 in its sandbox, one client — in this process; the timed HTTP client
(httpx, one kept-alive connection) runs in a process of its own, so its CPU is not the node's.
Each timed job settles before the next starts, so no job pays for another's settling.

    .venv/bin/python scripts/bench_http.py            # a table
    .venv/bin/python scripts/bench_http.py --json     # one JSON object

--json prints {"chat_stream_ttft_overhead_p50_ms", "http_overhead_p50_ms", "requests_per_s",
"http_layer_p50_ms", "http_server_p50_ms"}:
- time to the first streamed token over HTTP minus through the façade (p50 of each);
- a whole chat completion over HTTP minus the same job through the façade (p50 of each);
- chat completions per second over HTTP with `--concurrency` callers;
- per HTTP request, the caller's time minus the job's time as the node reports it
  (`server-timing`): the HTTP layer and the transport alone, without the noise of two jobs' times;
- the HTTP face's own work around the job (reading and checking the request, building the
  response), as the node times it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from node.app import Node
from node.config import HttpSettings
from node.devnet import Marketplace
from node.devnet.scenario import make_tiny_causal_lm
from node.domain.service import JobSpec
from node.domain.state import JobState
from node.executor.hf_model import read_hf_dir
from node.logging import configure_logging

DONE = (JobState.VERIFIED, JobState.SETTLED)


@dataclass
class Bench:
    client: Node
    model_id: str
    url: str


@asynccontextmanager
async def marketplace(root: Path) -> AsyncIterator[Bench]:
    async with Marketplace.open(root) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        chat = await asyncio.to_thread(make_tiny_causal_lm, root / "tiny-gpt2")
        http = HttpSettings(listen="127.0.0.1:0")
        client = await stack.enter_async_context(
            market.node(
                market.settings("client", provider=False, http=http), keys[8], serve_api=True, redemption=None
            ).running()
        )
        provider_key = keys[1]
        await market.register(provider_key)
        provider_settings = market.settings("provider", provider=True, bootstrap=[client.host.addrs[0]])
        market.install_model(provider_settings, chat)
        await stack.enter_async_context(
            market.node(provider_settings, provider_key, redemption=None).running()
        )
        await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60.0)
        await client.client_jobs.deposit(10**18)
        yield Bench(client, read_hf_dir(chat)[0].model_id, client.http.url)


def _request(model_id: str, seed: int, *, stream: bool) -> dict[str, object]:
    return {
        "model": model_id,
        "messages": [{"role": "user", "content": f"Hello {seed}"}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": stream,
    }


def _job_input(model_id: str, seed: int) -> bytes:
    body = _request(model_id, seed, stream=False)
    job = {"messages": body["messages"], "max_tokens": 4, "temperature": 0}
    return json.dumps(job, separators=(",", ":")).encode()


class Caller:
    """The HTTP client in a process of its own (this script with `--caller URL`), so its CPU is not
    the node's: one request per line asked of it, its time and job id read back."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    @asynccontextmanager
    async def started(cls, url: str) -> AsyncIterator[Caller]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--caller", url, stdin=PIPE, stdout=PIPE
        )
        try:
            yield cls(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            await process.wait()

    async def ask(self, kind: str, model_id: str, seed: int) -> tuple[float, str, float, float]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{kind} {model_id} {seed}\n".encode())
        await self.process.stdin.drain()
        took, job_id, *outside = (await self.process.stdout.readline()).decode().split()
        layer, server = (float(outside[0]), float(outside[1])) if outside else (float("nan"), float("nan"))
        return float(took), job_id, layer, server


def serve_caller(url: str) -> int:
    """`--caller`: time each asked-for request with a kept-alive connection."""
    with httpx.Client(base_url=url, timeout=120) as http:
        for line in sys.stdin:
            kind, model_id, seed = line.split()
            body = _request(model_id, int(seed), stream=kind == "ttft")
            start = time.perf_counter()
            if kind == "chat":
                response = http.post("/v1/chat/completions", json=body)
                response.raise_for_status()
                took = (time.perf_counter() - start) * 1000
                # What the node spent outside the job: the HTTP layer and the transport, and the
                # HTTP face's own work as the node timed it.
                timing = dict(
                    part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
                )
                job_id = response.headers["x-gpunode-job-id"]
                print(f"{took} {job_id} {took - float(timing['job'])} {timing['http']}", flush=True)
                continue
            else:
                took = float("nan")
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    for event in response.iter_lines():
                        if took != took and event.startswith("data: {"):
                            took = (time.perf_counter() - start) * 1000
            print(f"{took} {response.headers['x-gpunode-job-id']}", flush=True)
    return 0


async def _chat_http(
    caller: Caller,
    bench: Bench,
    seed: int,
    outside: list[float] | None = None,
    server: list[float] | None = None,
) -> float:
    took, job_id, layer, own = await caller.ask("chat", bench.model_id, seed)
    if outside is not None and server is not None:
        outside.append(layer)
        server.append(own)
    await _settled(bench, job_id)
    return took


async def _chat_facade(bench: Bench, seed: int) -> float:
    jobs = bench.client.services.jobs
    start = time.perf_counter()
    submitted = await jobs.submit(JobSpec(model_id=bench.model_id, input=_job_input(bench.model_id, seed)))
    await _until_done(bench, submitted.job_id)
    took = (time.perf_counter() - start) * 1000
    await _settled(bench, submitted.job_id)
    return took


async def _until_done(bench: Bench, job_id: str) -> None:
    async for view in bench.client.services.jobs.watch(job_id):
        if (view.state in DONE and view.output is not None) or view.terminal:
            return


async def _settled(bench: Bench, job_id: str) -> None:
    """Untimed: the job's settling ends before the next one starts, so no job pays for another's."""
    async for _ in bench.client.services.jobs.watch(job_id):
        pass


async def _ttft_http(caller: Caller, bench: Bench, seed: int) -> float:
    took, job_id, _, _ = await caller.ask("ttft", bench.model_id, seed)
    await _settled(bench, job_id)
    return took


async def _ttft_facade(bench: Bench, seed: int) -> float:
    jobs = bench.client.services.jobs
    start = time.perf_counter()
    submitted = await jobs.submit(
        JobSpec(model_id=bench.model_id, input=_job_input(bench.model_id, seed), stream=True)
    )
    first = None
    async for _ in jobs.follow_text(submitted.job_id):
        if first is None:
            first = (time.perf_counter() - start) * 1000
    await _settled(bench, submitted.job_id)
    return first if first is not None else float("nan")


async def _throughput(http: httpx.AsyncClient, bench: Bench, requests: int, concurrency: int) -> float:
    seeds = iter(range(10**6, 10**6 + requests))

    async def caller() -> None:
        for seed in seeds:
            response = await http.post(
                "/v1/chat/completions", json=_request(bench.model_id, seed, stream=False)
            )
            response.raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


async def measure(jobs: int, requests: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with marketplace(Path(tmp)) as bench:
            async with Caller.started(bench.url) as http:
                for seed in range(3):  # warm every path
                    await _chat_http(http, bench, seed)
                    await _chat_facade(bench, seed)
                    await _ttft_http(http, bench, seed)
                    await _ttft_facade(bench, seed)
                via_http, direct, ttft_http, ttft_direct, layer, server = [], [], [], [], [], []
                for seed in range(100, 100 + jobs):
                    # Each path goes first every other round, so neither always follows the other.
                    if seed % 2:
                        via_http.append(await _chat_http(http, bench, seed, layer, server))
                        direct.append(await _chat_facade(bench, seed))
                        ttft_http.append(await _ttft_http(http, bench, seed))
                        ttft_direct.append(await _ttft_facade(bench, seed))
                    else:
                        direct.append(await _chat_facade(bench, seed))
                        via_http.append(await _chat_http(http, bench, seed, layer, server))
                        ttft_direct.append(await _ttft_facade(bench, seed))
                        ttft_http.append(await _ttft_http(http, bench, seed))
            limits = httpx.Limits(max_keepalive_connections=concurrency, max_connections=concurrency)
            async with httpx.AsyncClient(base_url=bench.url, timeout=120, limits=limits) as http:
                rate = await _throughput(http, bench, requests, concurrency)
    return {
        "chat_stream_ttft_overhead_p50_ms": round(
            statistics.median(ttft_http) - statistics.median(ttft_direct), 3
        ),
        "http_overhead_p50_ms": round(statistics.median(via_http) - statistics.median(direct), 3),
        "requests_per_s": round(rate, 1),
        "http_layer_p50_ms": round(statistics.median(layer), 3),
        "http_server_p50_ms": round(statistics.median(server), 3),
        "_chat_http_p50_ms": round(statistics.median(via_http), 2),
        "_chat_facade_p50_ms": round(statistics.median(direct), 2),
        "_ttft_http_p50_ms": round(statistics.median(ttft_http), 2),
        "_ttft_facade_p50_ms": round(statistics.median(ttft_direct), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=40, help="jobs through each path, alternating")
    parser.add_argument("--requests", type=int, default=100, help="chat completions for the throughput")
    parser.add_argument("--concurrency", type=int, default=8, help="callers at once for the throughput")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--caller", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.caller:
        return serve_caller(args.caller)
    configure_logging("WARNING")
    figures = asyncio.run(measure(args.jobs, args.requests, args.concurrency))
    if args.json:
        print(json.dumps({k: v for k, v in figures.items() if not k.startswith("_")}))
        return 0
    labels = {
        "_chat_http_p50_ms": "chat completion over HTTP p50 (ms)",
        "_chat_facade_p50_ms": "the same job through the façade p50 (ms)",
        "http_overhead_p50_ms": "HTTP cost per job p50 (ms)",
        "_ttft_http_p50_ms": "first streamed token over HTTP p50 (ms)",
        "_ttft_facade_p50_ms": "first streamed token through the façade p50 (ms)",
        "chat_stream_ttft_overhead_p50_ms": "HTTP cost to the first token p50 (ms)",
        "http_layer_p50_ms": "HTTP cost per job, the node's job time taken out (ms)",
        "http_server_p50_ms": "the HTTP face's own work per job, timed in the node (ms)",
        "requests_per_s": "chat completions/s over HTTP",
    }
    for key, label in labels.items():
        print(f"{label:<56} {figures[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
