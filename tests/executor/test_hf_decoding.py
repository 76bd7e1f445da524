"""Decoding a generation request in the worker's process: a prompt run in chunks gives the tokens
of one pass over it, and a model whose cache cannot be shared refuses a second row in the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_support import LONG_PROMPT, plain_generate
from transformers import Qwen2ForCausalLM

from node.executor import hf_runtime
from node.executor.hf_batching import DecodeBatch, Prefill
from node.executor.hf_requests import parse_generation
from node.executor.hf_runtime import Decoding
from node.executor.hf_tiny import byte_tokenizer, write_tiny


def _loaded(source: Path, family: str) -> hf_runtime.LoadedModel:
    blobs = {path.name: path.read_bytes() for path in source.iterdir() if path.is_file()}
    architecture = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    spec = {"architecture": architecture[family], "precision": "F32", "task": "generate"}
    spec["context_length"] = 512
    return hf_runtime.load({"name": source.name, "hf": spec}, blobs, "cpu")


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("chunk", [1, 7, 128])
def test_can_run_a_prompt_in_chunks_and_get_the_tokens_of_one_pass(
    tmp_path: Path, family: str, chunk: int
) -> None:
    model = _loaded(write_tiny(family, tmp_path / family, context=512, init_std=0.2), family)
    for request in (
        {"prompt": LONG_PROMPT, "max_tokens": 30, "temperature": 0},
        {"prompt": LONG_PROMPT, "max_tokens": 30, "temperature": 1.0, "seed": 3},
    ):
        whole = parse_generation(model.generate(request, None, None))
        decoding = Decoding(model, request, None)
        prefill = Prefill(model, 0, decoding)
        runs = 0
        while prefill.left:
            assert prefill.logits is None
            prefill.run(chunk)
            runs += 1
        assert runs == -(-len(decoding.ids) // chunk)
        batch = DecodeBatch(model)
        if not batch.admit(prefill):
            while batch.rows:
                batch.step()
        assert len(set(whole.token_ids)) > 5
        assert list(decoding.text.tokens) == list(whole.token_ids)


def test_can_run_a_sliding_window_prompt_in_chunks_with_the_tokens_of_transformers(tmp_path: Path) -> None:
    """Chunks shorter and longer than the window: the window's cache is cut between chunks."""
    source = write_tiny("qwen2", tmp_path / "qwen2-sliding", context=512, sliding_window=8, init_std=0.2)
    model = _loaded(source, "qwen2")
    reference = Qwen2ForCausalLM.from_pretrained(source).eval()
    request = {"prompt": LONG_PROMPT[:100], "max_tokens": 20, "temperature": 0}
    expected = plain_generate(reference, byte_tokenizer().encode(LONG_PROMPT[:100]).ids, 20)
    for chunk in (3, 8, 30):
        decoding = Decoding(model, request, None)
        prefill = Prefill(model, 0, decoding)
        while prefill.left:
            prefill.run(chunk)
        batch = DecodeBatch(model)
        if not batch.admit(prefill):
            while batch.rows:
                batch.step()
        assert list(decoding.text.tokens) == expected, chunk


def test_cannot_batch_a_sliding_window_model(tmp_path: Path) -> None:
    """Batching it is refused with the reason, rather than merging caches that do not line up."""
    source = write_tiny("qwen2", tmp_path / "qwen2-sliding", sliding_window=8)
    blobs = {path.name: path.read_bytes() for path in source.iterdir()}
    spec = {"architecture": "Qwen2ForCausalLM", "precision": "F32", "task": "generate", "context_length": 256}
    model = hf_runtime.load({"name": "tiny-qwen2-sliding", "hf": spec}, blobs, "cpu")
    assert model.unbatched is not None
    assert "sliding-window attention" in model.unbatched
    batch = DecodeBatch(model)
    assert not batch.join(0, Decoding(model, {"prompt": "first", "max_tokens": 5, "temperature": 0}, None))
    with pytest.raises(RuntimeError, match="cannot batch: its sliding-window attention"):
        batch.join(1, Decoding(model, {"prompt": "second", "max_tokens": 5, "temperature": 0}, None))
    plain = write_tiny("qwen2", tmp_path / "qwen2")
    blobs = {path.name: path.read_bytes() for path in plain.iterdir()}
    assert hf_runtime.load({"name": "tiny-qwen2", "hf": spec}, blobs, "cpu").unbatched is None
