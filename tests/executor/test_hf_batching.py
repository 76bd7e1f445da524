"""Continuous batching: generation requests on one warm model are decoded together in one real
sandboxed worker, joining and leaving the batch between decoding steps, each with its own cache
rows, sampling settings, seed, stop sequences, budget and stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from executor_support import executor_settings
from hf_support import LONG_PROMPT, HfModels, plain_generate
from transformers import Qwen2ForCausalLM

from node.executor.errors import JobTimedOut, RequestRefused
from node.executor.hf_requests import GenerationResult, parse_generation
from node.executor.hf_tiny import byte_tokenizer, tiny_model, write_tiny
from node.executor.pool import ExecutorPool
from node.executor.result import ExecutionResult

pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUESTS = [
    {"prompt": "The first request", "max_tokens": 24, "temperature": 0},
    {"prompt": "b", "max_tokens": 40, "temperature": 1.0, "seed": 7},
    {"prompt": "A third, longer prompt than the others", "max_tokens": 8, "temperature": 0.8, "seed": 1},
    {"prompt": "stop", "max_tokens": 30, "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["e"]},
    {"prompt": "five", "max_tokens": 1, "temperature": 0},
    {"prompt": "six", "max_tokens": 33, "temperature": 1.3, "seed": 2**40},
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(hf_models: HfModels) -> AsyncIterator[ExecutorPool]:
    settings = executor_settings(hf_models.store.root, max_batch=8, workers_per_model=1)
    async with ExecutorPool(settings, hf_models.store) as pool:
        yield pool


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def chunked(hf_models: HfModels) -> AsyncIterator[ExecutorPool]:
    """A pool whose workers run joining prompts 7 tokens at a time between decoding steps."""
    settings = executor_settings(hf_models.store.root, max_batch=8, prefill_chunk_tokens=7)
    async with ExecutorPool(settings, hf_models.store) as pool:
        yield pool


async def run(
    pool: ExecutorPool, model: str, request: dict[str, object], pieces: list[str] | None = None
) -> ExecutionResult:
    return await pool.run(
        model, json.dumps(request).encode(), on_tokens=pieces.append if pieces is not None else None
    )


def tokens(result: ExecutionResult) -> GenerationResult:
    return parse_generation(result.output)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
async def test_can_batch_requests_and_give_each_the_tokens_it_gets_alone(
    pool: ExecutorPool, hf_models: HfModels, family: str
) -> None:
    model = getattr(hf_models, family).model_id
    alone = [await run(pool, model, request) for request in REQUESTS]
    streams: list[list[str]] = [[] for _ in REQUESTS]
    together = await asyncio.gather(
        *(run(pool, model, request, pieces) for request, pieces in zip(REQUESTS, streams, strict=True))
    )
    for one, batched, pieces in zip(alone, together, streams, strict=True):
        assert tokens(batched) == tokens(one)
        assert "".join(pieces) == tokens(batched).text  # each stream carries its own text only
        assert one.profile.batch_size == 1
    # Decoded together in the one warm worker, and the receipts say so: a batched request's
    # profile is not the one a lone re-run has.
    assert len(pool.lanes()[model].workers()) == 1
    assert max(result.profile.batch_size for result in together) > 1
    assert all(
        result.profile.hash() != alone[0].profile.hash()
        for result in together
        if result.profile.batch_size > 1
    )
    assert tokens(together[3]).finish_reason == "stop" or "e" not in tokens(together[3]).text
    assert tokens(together[4]).completion_tokens == 1


async def test_can_join_a_running_batch_and_leave_before_it_ends(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    model = hf_models.gpt2_long.model_id
    long_request = {"prompt": "a", "max_tokens": 1500, "temperature": 0}
    first_text = asyncio.Event()
    long_job = asyncio.create_task(
        pool.run(model, json.dumps(long_request).encode(), on_tokens=lambda _: first_text.set())
    )
    await first_text.wait()
    short = await run(pool, model, {"prompt": "b", "max_tokens": 5, "temperature": 0})
    assert not long_job.done()  # the short request joined the running batch and left it first
    assert short.profile.batch_size == 2
    assert tokens(short) == tokens(await run(pool, model, {"prompt": "b", "max_tokens": 5, "temperature": 0}))
    assert tokens(await long_job).completion_tokens > 1000


async def test_can_stop_one_request_and_leave_the_rest_of_the_batch_running(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    model = hf_models.gpt2_long.model_id
    request = {"prompt": "keep", "max_tokens": 300, "temperature": 0.9, "seed": 4}
    alone = tokens(await run(pool, model, request))
    first_text = asyncio.Event()
    dropped = asyncio.create_task(
        pool.run(
            model,
            json.dumps({"prompt": "drop", "max_tokens": 1500, "temperature": 0}).encode(),
            on_tokens=lambda _: first_text.set(),
        )
    )
    kept = asyncio.create_task(run(pool, model, request))
    await first_text.wait()
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert tokens(await kept) == alone


async def test_can_stop_a_generation_and_get_what_it_made(pool: ExecutorPool, hf_models: HfModels) -> None:
    model = hf_models.gpt2_long.model_id
    stop, pieces = asyncio.Event(), []

    def on_tokens(text: str) -> None:
        pieces.append(text)
        stop.set()

    request = json.dumps({"prompt": "a", "max_tokens": 1500, "temperature": 0}).encode()
    result = tokens(await pool.run(model, request, on_tokens=on_tokens, stop=stop))
    assert result.finish_reason == "cancelled"
    assert 0 < result.completion_tokens < 1500
    assert "".join(pieces) == result.text  # all it made, and no more, streamed


async def test_cannot_spoil_a_batch_with_a_prompt_longer_than_the_context(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    model = hf_models.llama.model_id
    honest = {"prompt": "honest", "max_tokens": 20, "temperature": 0.5, "seed": 9}
    alone = tokens(await run(pool, model, honest))
    results = await asyncio.gather(
        run(pool, model, honest),
        run(pool, model, {"prompt": "x" * 300, "max_tokens": 4}),
        run(pool, model, honest),
        return_exceptions=True,
    )
    assert isinstance(results[1], RequestRefused)
    assert "the prompt is 300 tokens" in str(results[1])
    assert [tokens(r) for r in (results[0], results[2]) if isinstance(r, ExecutionResult)] == [alone, alone]


async def test_cannot_hold_a_batch_past_a_deadline_nor_cost_it_its_worker(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    model = hf_models.gpt2_long.model_id
    await pool.warm(model)
    workers = {worker.pid for worker in pool.lanes()[model].workers()}
    honest = {"prompt": "on time", "max_tokens": 40, "temperature": 0}
    alone = tokens(await run(pool, model, honest))
    late = pool.run(
        model, json.dumps({"prompt": "a", "max_tokens": 2000, "temperature": 0}).encode(), timeout_s=0.5
    )
    results = await asyncio.gather(late, run(pool, model, honest), return_exceptions=True)
    assert isinstance(results[0], JobTimedOut)
    assert isinstance(results[1], ExecutionResult)
    assert tokens(results[1]) == alone
    # Stopped in the worker, which stays warm: the next request does not wait for 2000 tokens.
    assert tokens(await run(pool, model, {"prompt": "next", "max_tokens": 2})).completion_tokens == 2
    assert {worker.pid for worker in pool.lanes()[model].workers()} == workers
    assert all(worker.generations == 0 for worker in pool.lanes()[model].workers())


SLIDING_REQUESTS = [
    {"prompt": "a prompt longer than the window", "max_tokens": 30, "temperature": 0},
    {"prompt": "b", "max_tokens": 24, "temperature": 0},
    {"prompt": "three, also long enough", "max_tokens": 12, "temperature": 0},
]


async def test_can_serve_a_sliding_window_qwen2_unbatched_with_the_tokens_of_transformers(
    pool: ExecutorPool, hf_models: HfModels, tmp_path: Path
) -> None:
    """A Qwen2 model whose layers attend over a sliding window cannot share the batch's cache;
    its concurrent requests are decoded one at a time and give exactly transformers' tokens."""
    source = write_tiny("qwen2", tmp_path / "qwen2-sliding", sliding_window=8, init_std=0.2)
    manifest = hf_models.store.import_hf_dir(source, name="tiny-qwen2-sliding")
    reference = Qwen2ForCausalLM.from_pretrained(source).eval()
    prompts = [byte_tokenizer().encode(r["prompt"]).ids for r in SLIDING_REQUESTS]
    budgets = [int(r["max_tokens"]) for r in SLIDING_REQUESTS]
    expected = [plain_generate(reference, ids, n) for ids, n in zip(prompts, budgets, strict=True)]
    assert all(len(set(made)) > 5 for made in expected)  # varied text, not one token echoed
    # The window is in force: the same weights attending over everything give other tokens.
    unwindowed = Qwen2ForCausalLM(tiny_model("qwen2", init_std=0.2).config).eval()
    unwindowed.load_state_dict(reference.state_dict())
    assert plain_generate(unwindowed, prompts[0], 30) != expected[0]

    seeded = {"prompt": "seeded and sampled", "max_tokens": 20, "temperature": 0.9, "seed": 5}
    seeded_alone = tokens(await run(pool, manifest.model_id, seeded))
    together = await asyncio.gather(*(run(pool, manifest.model_id, r) for r in [*SLIDING_REQUESTS, seeded]))
    assert [list(tokens(r).token_ids) for r in together[:-1]] == expected
    assert tokens(together[-1]) == seeded_alone


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
async def test_can_join_a_running_batch_a_chunk_at_a_time_and_keep_every_token(
    pool: ExecutorPool, chunked: ExecutorPool, hf_models: HfModels, family: str
) -> None:
    """A worker that runs joining prompts 7 tokens at a time, between the running requests'
    decoding steps, gives each request the tokens it gets alone (from a worker that runs each
    prompt in one pass)."""
    model = getattr(hf_models, family).model_id
    requests = [*REQUESTS, {"prompt": LONG_PROMPT[:200], "max_tokens": 20, "temperature": 0.8, "seed": 9}]
    alone = [tokens(await run(pool, model, request)) for request in requests]
    first = asyncio.create_task(run(chunked, model, requests[0]))
    together = await asyncio.gather(*(run(chunked, model, request) for request in requests[1:]))
    assert [tokens(await first), *(tokens(r) for r in together)] == alone


async def test_cannot_stall_the_running_streams_with_a_long_prompt(
    chunked: ExecutorPool, hf_models: HfModels
) -> None:
    """The attacker sends a long prompt to a model whose batch streams other clients' text,
    hoping its prefill holds every stream still until it is read. Its prompt runs a chunk at a
    time, each followed by a decoding step of the batch: the running stream gets a piece for
    about every chunk while the long prompt joins."""
    model = hf_models.gpt2_long.model_id
    pieces: list[str] = []
    streaming, stop = asyncio.Event(), asyncio.Event()

    def on_tokens(text: str) -> None:
        pieces.append(text)
        streaming.set()

    running = json.dumps({"prompt": "a", "max_tokens": 1500, "temperature": 0}).encode()
    honest = asyncio.create_task(chunked.run(model, running, on_tokens=on_tokens, stop=stop))
    await streaming.wait()
    before = len("".join(pieces))
    attack = {"prompt": LONG_PROMPT, "max_tokens": 1, "temperature": 0}
    assert tokens(await run(chunked, model, attack)).completion_tokens == 1
    during = len("".join(pieces)) - before
    stop.set()
    assert tokens(await honest).finish_reason == "cancelled"
    chunks = -(-len(LONG_PROMPT) // 7)  # one character a token
    assert during >= chunks // 2, f"{during} tokens streamed while {chunks} chunks of the prompt ran"


async def test_can_stream_the_first_text_at_once_and_the_rest_at_the_stream_interval(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    model = hf_models.gpt2.model_id
    request = {"prompt": "Hello", "max_tokens": 40, "temperature": 0}
    quick: list[str] = []
    whole = tokens(await run(pool, model, request, quick))
    settings = executor_settings(hf_models.store.root, stream_interval_ms=1000, workers_per_model=1)
    async with ExecutorPool(settings, hf_models.store) as held:
        await held.warm(model)
        pieces: list[str] = []
        started = time.monotonic()
        result = tokens(await run(held, model, request, pieces))
        elapsed = time.monotonic() - started
    assert result == whole
    assert "".join(pieces) == result.text  # nothing held back is lost
    assert pieces[0] == quick[0]  # the first text is not held
    # The first piece, one a second at most, and the rest with the result.
    assert len(pieces) <= 2 + int(elapsed)
    assert len(pieces) < result.completion_tokens
