"""Generation and embedding jobs on Hugging Face models, in real sandboxed workers, checked against
plain `transformers` in this process."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import torch
from executor_support import executor_settings
from hf_support import MINILM_DIR, HfModels
from safetensors.torch import load
from transformers import AutoModelForCausalLM, BertModel
from transformers import PreTrainedTokenizerFast as Tokenizer

from node.executor.errors import InvalidInput, ModelFailed, RequestRefused
from node.executor.hf_requests import GenerationResult, parse_generation
from node.executor.manifest import ModelManifest
from node.executor.pool import ExecutorPool

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIMILAR = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = ("The stock market fell sharply on Monday.", "A girl is playing the violin on stage.")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(hf_models: HfModels) -> AsyncIterator[ExecutorPool]:
    async with ExecutorPool(executor_settings(hf_models.store.root), hf_models.store) as pool:
        yield pool


async def generate(pool: ExecutorPool, manifest: ModelManifest, **request: object) -> GenerationResult:
    result = await pool.run(manifest.model_id, json.dumps(request).encode())
    return parse_generation(result.output)


def reference_greedy(model_dir: Path, prompt: str, tokens: int) -> list[int]:
    """Plain transformers `generate()`, greedy, on the same directory."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer = Tokenizer(tokenizer_file=str(model_dir / "tokenizer.json"))
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False, pad_token_id=0)
    new = out[0, ids.shape[1] :].tolist()
    eos = model.config.eos_token_id
    return new[: new.index(eos)] if eos in new else new


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
async def test_can_generate_greedily_what_plain_transformers_generates(
    pool: ExecutorPool, hf_models: HfModels, family: str
) -> None:
    manifest = getattr(hf_models, family)
    result = await generate(pool, manifest, prompt="Hello there", max_tokens=24, temperature=0)
    assert list(result.token_ids) == reference_greedy(hf_models.dirs[family], "Hello there", 24)
    assert result.prompt_tokens == len(b"Hello there")
    assert result.completion_tokens == len(result.token_ids)
    assert result.finish_reason in ("length", "eos")


async def test_can_reproduce_a_sampled_generation_from_its_seed(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    request = {"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0.9, "top_p": 0.95, "seed": 7}
    first = await generate(pool, hf_models.llama, **request)
    again = await generate(pool, hf_models.llama, **request)
    other = await generate(pool, hf_models.llama, **{**request, "seed": 8})
    assert first == again
    assert first.token_ids != other.token_ids


async def test_can_generate_from_chat_messages_through_the_chat_template(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    result = await generate(pool, hf_models.qwen2, messages=messages, max_tokens=4, temperature=0)
    rendered = "<|system|>Be brief.\n<|user|>hi\n<|assistant|>"
    assert result.prompt_tokens == len(rendered.encode())


async def test_can_stop_at_a_stop_sequence_and_leave_it_out(pool: ExecutorPool, hf_models: HfModels) -> None:
    plain = await generate(pool, hf_models.gpt2, prompt="abc", max_tokens=40, temperature=0)
    readable = [i for i in range(5, len(plain.text) - 2) if "\ufffd" not in plain.text[i : i + 2]]
    assert readable, plain.text
    start = readable[0]
    stop = plain.text[start : start + 2]
    cut = await generate(pool, hf_models.gpt2, prompt="abc", max_tokens=40, temperature=0, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == plain.text[: plain.text.find(stop)]


async def test_can_run_out_of_tokens_when_a_stop_sequence_never_comes(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    result = await generate(pool, hf_models.gpt2, prompt="abc", max_tokens=12, temperature=0, stop=["never"])
    assert result.finish_reason in ("length", "eos")
    assert result.completion_tokens <= 12


async def test_cannot_send_a_prompt_longer_than_the_context(pool: ExecutorPool, hf_models: HfModels) -> None:
    with pytest.raises(
        RequestRefused, match="the prompt is 300 tokens; model tiny-llama has a context of 256"
    ):
        await generate(pool, hf_models.llama, prompt="x" * 300, max_tokens=4)
    # The warm worker stays up and serves the next job: nothing else was lost.
    workers = pool.lanes()[hf_models.llama.model_id].workers()
    result = await generate(pool, hf_models.llama, prompt="x" * 250, max_tokens=10, temperature=0)
    assert result.completion_tokens <= 6  # the context, not max_tokens, ends it
    assert pool.lanes()[hf_models.llama.model_id].workers() == workers


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (b"not json", "is invalid: request: Invalid JSON"),
        (b'{"max_tokens": 4}', "give exactly one of prompt or messages"),
        (b'{"prompt": "hi", "temperature": -1}', "temperature"),
        (b'{"prompt": "hi", "code": "import os"}', "code"),
    ],
)
async def test_cannot_send_a_malformed_generation_request(
    pool: ExecutorPool, hf_models: HfModels, request_bytes: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await pool.run(hf_models.gpt2.model_id, request_bytes)


async def test_can_embed_similar_sentences_closer_than_unrelated_ones(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    texts = [*SIMILAR, *UNRELATED]
    result = await pool.run(hf_models.minilm.model_id, json.dumps({"texts": texts}).encode())
    vectors = load(result.output)["embeddings"]
    assert vectors.shape == (4, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-5)  # the Normalize module
    scores = vectors @ vectors.T
    assert scores[0, 1] > 0.5
    assert scores[0, 1] > max(scores[0, 2], scores[0, 3], scores[1, 2], scores[1, 3]) + 0.3


async def test_can_embed_what_plain_transformers_with_mean_pooling_gives(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    texts = [*SIMILAR, "short", "a somewhat longer sentence that pads the others in its batch"]
    result = await pool.run(hf_models.minilm.model_id, json.dumps({"texts": texts}).encode())
    ours = load(result.output)["embeddings"]
    model = BertModel.from_pretrained(MINILM_DIR, use_safetensors=True).eval()
    tokenizer = Tokenizer(tokenizer_file=str(MINILM_DIR / "tokenizer.json"))
    tokenizer.pad_token = "[PAD]"
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    assert torch.allclose(ours, expected, atol=1e-5)


async def test_cannot_send_an_embedding_request_without_texts(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    with pytest.raises(InvalidInput, match="texts"):
        await pool.run(hf_models.minilm.model_id, b'{"texts": []}')


@pytest.mark.parametrize("stop", [[], ["never"]])
async def test_can_stream_text_that_adds_up_to_the_whole_output(
    pool: ExecutorPool, hf_models: HfModels, stop: list[str]
) -> None:
    pieces: list[str] = []
    request = {"prompt": "Stream", "max_tokens": 40, "temperature": 0.8, "seed": 3, "stop": stop}
    result = await pool.run(hf_models.llama.model_id, json.dumps(request).encode(), on_tokens=pieces.append)
    whole = parse_generation(result.output)
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text


async def test_can_stream_up_to_a_stop_sequence_without_sending_it(
    pool: ExecutorPool, hf_models: HfModels
) -> None:
    plain = await generate(pool, hf_models.gpt2, prompt="abc", max_tokens=40, temperature=0)
    start = next(i for i in range(5, len(plain.text) - 3) if "\ufffd" not in plain.text[i : i + 3])
    stop = plain.text[start : start + 3]
    pieces: list[str] = []
    request = {"prompt": "abc", "max_tokens": 40, "temperature": 0, "stop": [stop]}
    result = await pool.run(hf_models.gpt2.model_id, json.dumps(request).encode(), on_tokens=pieces.append)
    assert "".join(pieces) == parse_generation(result.output).text == plain.text[: plain.text.find(stop)]


async def test_can_stop_generating_when_the_caller_goes_away(pool: ExecutorPool, hf_models: HfModels) -> None:
    model = hf_models.gpt2_long.model_id
    long_request = json.dumps({"prompt": "a", "max_tokens": 2000, "temperature": 0}).encode()
    short_request = json.dumps({"prompt": "a", "max_tokens": 1}).encode()
    await pool.warm(model)
    loop = asyncio.get_running_loop()
    started = loop.time()
    whole = parse_generation((await pool.run(model, long_request)).output)
    full_s = loop.time() - started
    assert whole.completion_tokens > 1000  # long enough that stopping early shows

    first_text = asyncio.Event()
    job = asyncio.create_task(pool.run(model, long_request, on_tokens=lambda _: first_text.set()))
    await first_text.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    stopped = loop.time()
    # One warm worker: the next job waits until the cancelled one has stopped in it.
    await pool.run(model, short_request)
    assert loop.time() - stopped < full_s / 2
    assert len(pool.lanes()[model].workers()) == 1


async def test_can_generate_with_an_int8_variant(pool: ExecutorPool, hf_models: HfModels) -> None:
    request = {"prompt": "Hello there", "max_tokens": 16, "temperature": 0}
    ran = await pool.run(hf_models.llama_int8.model_id, json.dumps(request).encode())
    result = parse_generation(ran.output)
    assert result.completion_tokens > 0
    assert result.prompt_tokens == len(b"Hello there")
    # Its bits depend on what quantized it, so the profile (and the receipt's hash) says so.
    assert ran.profile.quantizer == f"torch-{torch.__version__}-dynamic-int8"
    full = await pool.run(hf_models.llama.model_id, json.dumps(request).encode())
    assert full.profile.quantizer == ""


async def test_can_keep_int8_logits_close_to_full_precision(hf_models: HfModels) -> None:
    from node.executor import hf_runtime

    def logits(manifest: ModelManifest) -> torch.Tensor:
        model_dir = hf_models.store.path(manifest.model_id)
        blobs = {name: (model_dir / name).read_bytes() for name in manifest.files}
        loaded = hf_runtime.load(json.loads(manifest.canonical_bytes()), blobs, "cpu")
        ids = loaded.prompt_ids({"prompt": "The int8 variant is measured against this text."})
        with torch.no_grad():
            return loaded.model(input_ids=torch.tensor([ids])).logits[0].float()

    full, int8 = logits(hf_models.llama), logits(hf_models.llama_int8)
    cosine = torch.nn.functional.cosine_similarity(full, int8, dim=-1)
    assert float(cosine.min()) > 0.99
    assert not torch.equal(full, int8)  # quantized for real


async def test_can_keep_logits_close_with_torchaos_int8_weight_only_quantization(hf_models: HfModels) -> None:
    """The CUDA path's quantizer (torchao int8 weight-only), run here on the CPU, where it works too."""
    from torchao.quantization import Int8Tensor

    from node.executor import hf_runtime

    model_dir = hf_models.store.path(hf_models.llama.model_id)
    blobs = {name: (model_dir / name).read_bytes() for name in hf_models.llama.files}
    loaded = hf_runtime.load(json.loads(hf_models.llama.canonical_bytes()), blobs, "cpu")
    ids = torch.tensor([loaded.prompt_ids({"prompt": "The int8 variant is measured against this text."})])
    with torch.no_grad():
        full = loaded.model(input_ids=ids).logits[0].float()
        quantized = hf_runtime.int8_weight_only(loaded.model)
        int8 = quantized(input_ids=ids).logits[0].float()
    linears = [m for m in quantized.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    assert all(isinstance(m.weight, Int8Tensor) for m in linears)
    assert float(torch.nn.functional.cosine_similarity(full, int8, dim=-1).min()) > 0.99
    assert not torch.equal(full, int8)
    assert hf_runtime.int8_quantizer("cuda:0").startswith("torchao-")


async def test_cannot_reach_python_from_a_chat_template(
    pool: ExecutorPool, hf_models: HfModels, tmp_path: Path
) -> None:
    """A chat template is rendered in a sandboxed Jinja environment: one reaching for Python's
    internals fails that job alone, and the worker serves the next."""
    model = tmp_path / "evil-template"
    shutil.copytree(hf_models.dirs["gpt2"], model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    evil = hf_models.store.import_hf_dir(model, name="evil-template")
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ModelFailed, match="unsafe"):
        await generate(pool, evil, messages=messages, max_tokens=4)
    result = await generate(pool, evil, prompt="still here", max_tokens=4, temperature=0)
    assert result.prompt_tokens == len(b"still here")
