"""Marketplace overhead per job and jobs/s, end to end on loopback with warm models.

Starts a chain with the contracts, `--providers` provider nodes and a client node (real libp2p on
127.0.0.1, the sandboxed executor, SQLite), warms the built-in MLP, then:

- latency: `--jobs` voucher-paid jobs one after the other; each job's end-to-end time is from
  `submit()` to its `settled` state as the client's watch sees it; the overhead is that minus the
  seconds the executor spent running it (measured by the provider around the sandboxed run);
- throughput: `--burst` jobs submitted at once, jobs/s from the first submit to the last settled.

    .venv/bin/python scripts/bench_e2e.py [--providers 1] [--jobs 200] [--burst 200]
                                          [--synchronous normal|full] [--nodes process|shared]
                                          [--json] [--breakdown]

`--nodes process` (the default) runs each provider in a process of its own on anvil, as nodes are
deployed: client and provider then do not take turns on one interpreter's lock. `--nodes shared`
runs every node in this process on the embedded chain, so both sides of each job share one
interpreter (and, here, two cores): an upper bound on the overhead.

`--synchronous` is each node's SQLite durability (`storage.url`'s `?synchronous=`): `normal`, the
node's default, survives a crash of the node; `full` also a power cut, at an fsync per commit.

With `--json` it prints exactly {"overhead_p50_ms": x, "overhead_p99_ms": x, "jobs_per_s": x}.
With `--breakdown` it also prints, for the jobs timed one after the other, the p50 of each step
of a job (client and provider stamps on one clock; see `e2e_breakdown.py`). The stamps cost a few
microseconds each, so the figures of a run with `--breakdown` are a little higher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.app import Node
from node.chain.keys import NodeKey
from node.chain.market import voucher_job_id
from node.config import Settings
from node.devnet.marketplace import PRICE_WEI, REDEEM_ON_REQUEST, Marketplace
from node.domain.service import JobSpec
from node.domain.state import JobState
from node.logging import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_breakdown import Stamps, Timeline, report, stamp_client, stamp_provider


def job_input(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((2, 64), dtype=np.float32)}))


async def run_until(node: Node, job_id: str) -> JobState:
    async for view in node.services.jobs.watch(job_id):
        if view.terminal:
            return view.state
    raise RuntimeError(f"job {job_id} stopped being watched before it finished")


async def latency(
    client: Node, model_id: str, jobs: int, first_seed: int, timeline: Timeline | None = None
) -> dict[str, float]:
    """Each job's end-to-end seconds, by job id."""
    elapsed: dict[str, float] = {}
    stamps = timeline if timeline is not None else Timeline()
    for i in range(jobs):
        stamps.begin("submitting")
        started = time.perf_counter()
        stamps.mark("client submit called")
        view = await client.services.jobs.submit(JobSpec(model_id=model_id, input=job_input(first_seed + i)))
        stamps.mark("client submitted")
        state = await run_until(client, view.job_id)
        elapsed[view.job_id] = time.perf_counter() - started
        stamps.mark("client settled seen")
        stamps.rename("submitting", view.job_id)
        stamps.end()
        if state is not JobState.SETTLED:
            raise RuntimeError(f"job {view.job_id} ended {state}")
    return elapsed


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


class ProviderProcess:
    """A provider node in a child process (this script with `--provider-child`). The child reads
    its settings and key as the first line of stdin and prints its first listen address when
    ready; on each further line it prints the execution seconds of every job it ran, and the
    stamps of their steps when asked for a breakdown, as JSON."""

    def __init__(self, process: asyncio.subprocess.Process, addr: str) -> None:
        self.process = process
        self.addr = addr

    @classmethod
    async def start(cls, settings: Settings, key: NodeKey, *, breakdown: bool) -> ProviderProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--provider-child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,  # a breakdown's stamps come back on one line
        )
        spec = {
            "settings": settings.model_dump(mode="json"),
            "key": key.private_key.hex(),
            "breakdown": breakdown,
        }
        line = await cls._ask(process, json.dumps(spec), timeout_s=300)
        if not line:
            raise RuntimeError(f"provider {key.address} did not start (exit {await process.wait()})")
        return cls(process, json.loads(line)["addr"])

    @staticmethod
    async def _ask(process: asyncio.subprocess.Process, line: str, *, timeout_s: float) -> bytes:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(line.encode() + b"\n")
        await process.stdin.drain()
        return await asyncio.wait_for(process.stdout.readline(), timeout_s)

    async def timings(self) -> tuple[dict[str, float], Stamps]:
        reply = json.loads(await self._ask(self.process, "timings", timeout_s=60))
        stamps = {job: [(label, at) for label, at in marks] for job, marks in reply["stamps"].items()}
        return dict(reply["run_seconds"]), stamps

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def provider_child() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    node = Node(
        Settings.model_validate(spec["settings"]),
        key=NodeKey.from_private_key(bytes.fromhex(spec["key"])),
        redemption=REDEEM_ON_REQUEST,
    )
    timeline = Timeline()
    async with node.running():
        assert node.provider is not None
        if spec["breakdown"]:
            stamp_provider(timeline, node.provider)
        print(json.dumps({"addr": node.host.addrs[0]}), flush=True)
        while await reader.readline():
            timings = {job_id.hex(): s for job_id, s in node.provider.runner.run_seconds.items()}
            print(json.dumps({"run_seconds": timings, "stamps": timeline.jobs}), flush=True)


async def bench(args: argparse.Namespace, root: Path) -> tuple[dict[str, float], list[str]]:
    shared = args.nodes == "shared"
    chain = "embedded" if shared else "anvil"
    async with Marketplace.open(root, chain=chain, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()

        def settings_for(name: str, *, provider: bool, bootstrap: list[str]) -> Settings:
            settings = market.settings(name, provider=provider, bootstrap=bootstrap)
            settings.storage.url += f"?synchronous={args.synchronous}"
            return settings

        client = market.node(settings_for("client", provider=False, bootstrap=[]), keys[9])
        await stack.enter_async_context(client.running())
        bootstrap = [client.host.addrs[0]]
        in_process: list[Node] = []
        children: list[ProviderProcess] = []
        for i in range(args.providers):
            key = keys[1 + i]
            await market.register(key)
            settings = settings_for(f"provider{i}", provider=True, bootstrap=bootstrap)
            if shared:
                # The providers redeem only when asked, so no redemption lands in the measurement.
                in_process.append(await stack.enter_async_context(market.node(settings, key).running()))
            else:
                child = await ProviderProcess.start(settings, key, breakdown=args.breakdown)
                stack.push_async_callback(child.stop)
                children.append(child)
        await client.discovery.directory.wait_for(lambda d: len(d) >= args.providers, timeout_s=60)
        await client.client_jobs.deposit(10**18)
        model_id = market.model_id
        client_stamps = Timeline()
        provider_stamps = Timeline()
        if args.breakdown:
            stamp_client(client_stamps, client)
            for node in in_process:
                assert node.provider is not None
                stamp_provider(provider_stamps, node.provider)
        await latency(client, model_id, args.warmup, 0)
        client_stamps.jobs.clear()
        elapsed = await latency(client, model_id, args.jobs, 10_000, client_stamps)
        rate = await throughput(client, model_id, args.burst, 20_000)
        executed: dict[str, float] = {}
        for node in in_process:
            assert node.provider is not None
            executed.update({job.hex(): s for job, s in node.provider.runner.run_seconds.items()})
        stamps = provider_stamps.jobs
        for child in children:
            run_seconds, child_stamps = await child.timings()
            executed.update(run_seconds)
            stamps.update(child_stamps)
        # A provider keeps a voucher job under its id in the voucher namespace (`voucher_job_id`).
        by_client_id = {voucher_job_id(client.key.address, bytes.fromhex(job)).hex(): job for job in elapsed}
        executed = {by_client_id.get(job, job): s for job, s in executed.items()}
        stamps = {by_client_id.get(job, job): marks for job, marks in stamps.items()}
    missing = [job for job in elapsed if job not in executed]
    if missing:
        raise RuntimeError(f"no provider reports running {len(missing)} of the timed jobs")
    overheads = [(seconds - executed[job]) * 1000 for job, seconds in elapsed.items()]
    quantiles = statistics.quantiles(overheads, n=100, method="inclusive")
    figures = {
        "overhead_p50_ms": round(quantiles[49], 3),
        "overhead_p99_ms": round(quantiles[98], 3),
        "jobs_per_s": round(rate, 2),
    }
    if not args.breakdown:
        return figures, []
    timed = {job: marks + stamps.get(job, []) for job, marks in client_stamps.jobs.items()}
    return figures, report(timed, executed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=200, help="jobs timed one after the other")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200, help="jobs submitted at once for jobs/s")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal")
    parser.add_argument("--nodes", choices=("process", "shared"), default="process")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="print each step's p50 (stamped runs)")
    parser.add_argument("--provider-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.provider_child:
        asyncio.run(provider_child())
        return
    with tempfile.TemporaryDirectory(prefix="gpunode-bench-e2e-") as tmp:
        figures, breakdown = asyncio.run(bench(args, Path(tmp)))
    if breakdown:
        print("\n".join(breakdown), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(figures))
        return
    where = (
        "each in its own process, anvil" if args.nodes == "process" else "all in this process, embedded chain"
    )
    print(f"providers:               {args.providers} (loopback, warm built-in MLP, voucher payment)")
    print(f"nodes:                   {where}")
    print(f"sqlite synchronous:      {args.synchronous}")
    p50 = figures["overhead_p50_ms"]
    print(f"overhead p50 per job:    {p50:.2f} ms  (end to end minus execution; target <= 10 ms)")
    print(f"overhead p99 per job:    {figures['overhead_p99_ms']:.2f} ms")
    print(f"throughput:              {figures['jobs_per_s']:.1f} jobs/s ({args.burst} jobs at once)")


if __name__ == "__main__":
    main()
