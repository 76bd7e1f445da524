"""Where a generation's time to first token and an embedding job's time go, hop by hop.

The setting of `bench_generation.py` (its nodes' settings, a client node → a provider node over real libp2p on
127.0.0.1 → its sandboxed warm worker), with the stamps of `e2e_breakdown.py` on the client's and
the provider's parts, plus the first text: as the provider's worker handle reads it from the
worker, as the provider writes its frame, and as the client's follower sees it. Jobs run one after
the other; each step's p50 is printed as one JSON object (milliseconds), the critical path in
order, and the CPU time a job costs the node process (both nodes) and the provider's workers.
Plain `transformers` in this process runs the same work between the jobs, for the figure
the marketplace adds to.

    .venv/bin/python scripts/breakdown_generation.py [--runs 10] [--tokens 128]
                                                    [--stream-interval-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_generation import PROMPT, TEXTS, LocalEmbedder, LocalGenerator, generation_market
from e2e_breakdown import Stamps, Timeline, stamp_client, stamp_provider

from node.app import Node
from node.chain.market import voucher_job_id
from node.domain.service import JobSpec
from node.domain.state import JobState
from node.executor.framing import Kind
from node.executor.hf_tiny import write_tiny
from node.executor.worker_handle import WorkerHandle
from node.logging import configure_logging

FIRST_FROM_WORKER = "provider first text from worker"
# Shared by both kinds of job: (step ending at this stamp, the stamp); a prefix matches the last.
HEAD = (
    ("client: submit (choose, check input, store job and input)", "client submitted"),
    ("client: task picks the job up", "client voucher sign start"),
    ("client: sign the voucher", "client voucher signed"),
    ("client: write matched+paid", "client write matched"),
    ("client: build the request", "client request start"),
    ("request over libp2p (bridge, yamux/noise, bridge)", "provider request in"),
    ("provider: check the voucher's signature", "provider voucher checked"),
    ("provider: check the deposit, store job and voucher", "provider job stored"),
    ("provider: start the execution", "provider exec start"),
)
FIRST_TEXT = (
    *HEAD,
    ("worker: queue, prefill, first text back to the node", FIRST_FROM_WORKER),
    ("provider: first text to its frame", "provider JobTokens encoded"),
    ("provider: frame written to the stream", "provider JobTokens written"),
    ("first text over libp2p to the client's follower", "client first text"),
)
EMBED = (
    *HEAD,
    ("execution (queue, worker round trip, checks, hashes)", "provider exec end"),
    ("provider: sign the receipt", "provider receipt signed"),
    ("provider: write started+signed", "provider write "),
    ("provider: result to its frame", "provider JobResult encoded"),
    ("result over libp2p to the client", "client result in"),
    ("client: verify hash and receipt", "client verified"),
    ("client: write received+verified+settled", "client write "),
    ("client: watcher sees settled", "client settled seen"),
)


def stamp_first_text(timeline: Timeline) -> None:
    """Stamp the first TOKENS of each job as the node's handle on the worker reads it."""
    inner = WorkerHandle._answer_generation

    def answer(handle: WorkerHandle, reply: Any) -> None:
        current = timeline._current
        first = current is not None and all(label != FIRST_FROM_WORKER for label, _ in current)
        if reply.kind is Kind.TOKENS and first:
            timeline.mark(FIRST_FROM_WORKER)
        inner(handle, reply)

    WorkerHandle._answer_generation = answer  # type: ignore[method-assign]


def steps(marks: list[tuple[str, float]], path: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """Milliseconds of each step of `path` in one job's stamps (steps it lacks are left out)."""
    out: dict[str, float] = {}
    previous = next((at for label, at in marks if label == "client submit called"), None)
    for name, prefix in path:
        if previous is None:
            break
        at = next((at for label, at in marks if label.startswith(prefix) and at >= previous), None)
        if at is None:
            continue  # a step this job does not take
        out[name] = (at - previous) * 1000
        previous = at
    return out


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user and system) of the processes `pids` and all their descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    wanted, total = list(pids), 0
    while wanted:
        pid = wanted.pop()
        total += ticks.get(pid, 0)
        wanted += [child for child, parent in parents.items() if parent == pid]
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of this process (both nodes, their libp2p thread, the database thread) and of the
    provider's sandboxed workers, over the jobs measured."""

    def __init__(self, provider: Node) -> None:
        assert provider.provider is not None
        self._workers = [w.pid for lane in provider.provider.pool.lanes().values() for w in lane.workers()]
        self.node_s = self.worker_s = 0.0

    def __enter__(self) -> CpuMeter:
        self._node, self._worker = time.process_time(), cpu_s(self._workers)
        return self

    def __exit__(self, *_: object) -> None:
        self.node_s += time.process_time() - self._node
        self.worker_s += cpu_s(self._workers) - self._worker


def p50s(jobs: list[dict[str, float]]) -> dict[str, float]:
    names: dict[str, list[float]] = {}
    for job in jobs:
        for name, ms in job.items():
            names.setdefault(name, []).append(ms)
    return {name: round(statistics.median(values), 3) for name, values in names.items()}


async def one_job(client: Node, spec: JobSpec, timeline: Timeline) -> str:
    jobs = client.services.jobs
    timeline.begin("submitting")
    timeline.mark("client submit called")
    view = await jobs.submit(spec)
    timeline.mark("client submitted")
    if spec.stream:
        async for _ in jobs.follow_text(view.job_id):
            timeline.mark("client first text")
            break
    async for seen in jobs.watch(view.job_id):
        if seen.terminal:
            if seen.state is not JobState.SETTLED:
                raise RuntimeError(f"job {view.job_id} ended {seen.state}: {seen.error}")
            break
    timeline.mark("client settled seen")
    timeline.rename("submitting", view.job_id)
    timeline.end()
    return view.job_id


def merged(ours: Timeline, theirs: Stamps, job_id: str) -> list[tuple[str, float]]:
    # The provider stamps a job under the id of its request, the client's job id.
    return sorted(ours.jobs.get(job_id, []) + theirs.get(job_id, []), key=lambda mark: mark[1])


async def measure(args: argparse.Namespace, root: Path, model_dir: Path) -> dict[str, Any]:
    local, local_embedder = LocalGenerator(model_dir), LocalEmbedder()
    market = generation_market(root / "net", model_dir, args.stream_interval_ms)
    async with market as (client, provider, generator, embedder):
        assert provider.provider is not None
        client_stamps, provider_stamps = Timeline(), Timeline()
        stamp_client(client_stamps, client)
        stamp_provider(provider_stamps, provider.provider)
        stamp_first_text(provider_stamps)
        request = json.dumps({"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0}).encode()
        generation = JobSpec(model_id=generator, input=request, stream=True)
        embedding = JobSpec(model_id=embedder, input=json.dumps({"texts": TEXTS}).encode())
        for spec in (generation, embedding):  # warm-up
            await one_job(client, spec, client_stamps)
        generation_cpu, embedding_cpu = CpuMeter(provider), CpuMeter(provider)
        first_text: list[dict[str, float]] = []
        embeds: list[dict[str, float]] = []
        local_ttft, local_embed, run_ms = [], [], []
        for _ in range(args.runs):
            local_ttft.append(await asyncio.to_thread(local.generate, 1) * 1000)
            with generation_cpu:
                job = await one_job(client, generation, client_stamps)
            first_text.append(steps(merged(client_stamps, provider_stamps.jobs, job), FIRST_TEXT))
            local_embed.append(len(TEXTS) / await asyncio.to_thread(local_embedder.embed) * 1000)
            with embedding_cpu:
                job = await one_job(client, embedding, client_stamps)
            marks = merged(client_stamps, provider_stamps.jobs, job)
            embeds.append(steps(marks, EMBED))
            provider_id = voucher_job_id(client.key.address, bytes.fromhex(job))
            run_ms.append(provider.provider.runner.run_seconds[provider_id] * 1000)
    ttft = p50s(first_text)
    runs = args.runs
    embed = p50s(embeds)
    return {
        "ttft_steps_p50_ms": ttft,
        "ttft_sum_of_p50s_ms": round(sum(ttft.values()), 3),
        "ttft_local_p50_ms": round(statistics.median(local_ttft), 3),
        "embed_steps_p50_ms": embed,
        "embed_sum_of_p50s_ms": round(sum(embed.values()), 3),
        "embed_run_s_p50_ms": round(statistics.median(run_ms), 3),
        "embed_local_p50_ms": round(statistics.median(local_embed), 3),
        "generation_cpu_ms_per_job": {
            "node": round(generation_cpu.node_s * 1000 / runs, 1),
            "worker": round(generation_cpu.worker_s * 1000 / runs, 1),
        },
        "embedding_cpu_ms_per_job": {
            "node": round(embedding_cpu.node_s * 1000 / runs, 1),
            "worker": round(embedding_cpu.worker_s * 1000 / runs, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--stream-interval-ms", type=float, default=None, help="the provider's setting")
    args = parser.parse_args()
    configure_logging("WARNING")
    torch.set_num_threads(1)  # the worker's thread count (executor.threads)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="gpunode-breakdown-gen-") as tmp:
        root = Path(tmp)
        model_dir = write_tiny("gpt2", root / "gpt2-bench", layers=6, hidden=384, context=1024)
        figures = asyncio.run(measure(args, root, model_dir))
    sys.stdout.write(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
