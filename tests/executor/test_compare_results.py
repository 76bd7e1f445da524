"""Comparing two providers' results: bit-exact under one execution profile, the model's tolerance
under different ones. An honest difference passes; a lazy or random output does not."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save

from node.executor.compare import RunResult, compare_outputs, compare_runs
from node.executor.manifest import ModelManifest, Tolerance, tolerance_for
from node.types import Address, Hash32, ResultReceipt, sha256

TENSORS = Tolerance(compare="tensors")
COSINE = Tolerance(compare="cosine")
TOKENS = Tolerance(compare="tokens", prefix_tokens=4)


def tensors(values: np.ndarray, name: str = "output") -> bytes:
    return bytes(save({name: values.astype(np.float32)}))


def run(output: bytes, profile: int) -> RunResult:
    receipt = ResultReceipt(
        job_id=Hash32(b"\x01" * 32),
        model_id=Hash32(b"\x02" * 32),
        input_hash=Hash32(b"\x03" * 32),
        output_hash=sha256(output),
        profile_hash=Hash32(bytes([profile]) * 32),
        provider=Address("0x" + "11" * 20),
    )
    return RunResult(receipt, b"", output)


def generation(tokens: list[int]) -> bytes:
    return json.dumps(
        {
            "text": "x",
            "token_ids": tokens,
            "finish_reason": "length",
            "prompt_tokens": 1,
            "completion_tokens": len(tokens),
        }
    ).encode()


VALUES = np.random.default_rng(0).standard_normal((4, 16))


def test_can_accept_an_honest_difference_under_another_profile() -> None:
    nudged = VALUES * (1 + 1e-6) + 1e-7  # another thread count's rounding
    assert compare_runs(run(tensors(VALUES), 1), run(tensors(nudged), 2), TENSORS).agree
    assert compare_outputs(tensors(VALUES), tensors(nudged), COSINE).agree


def test_cannot_differ_at_all_under_the_same_profile() -> None:
    nudged = VALUES * (1 + 1e-6)
    compared = compare_runs(run(tensors(VALUES), 1), run(tensors(nudged), 1), TENSORS)
    assert not compared.agree
    assert "same execution profile" in compared.why


def test_cannot_pass_off_zeros_random_bytes_or_other_shapes() -> None:
    honest = tensors(VALUES)
    for lazy in (
        tensors(np.zeros_like(VALUES)),
        tensors(np.random.default_rng(1).standard_normal((4, 16))),
        tensors(VALUES[:2]),
        tensors(VALUES, name="other"),
        b"random bytes that are no tensors",
        tensors(np.full_like(VALUES, np.nan)),
    ):
        assert not compare_outputs(honest, lazy, TENSORS).agree
        assert not compare_outputs(honest, lazy, COSINE).agree


def test_can_compare_generations_on_their_first_tokens() -> None:
    assert compare_outputs(generation([1, 2, 3, 4, 5]), generation([1, 2, 3, 4, 9]), TOKENS).agree
    assert not compare_outputs(generation([1, 2, 3, 4]), generation([1, 2, 7, 4]), TOKENS).agree
    assert not compare_outputs(generation([1, 2, 3, 4]), generation([1, 2]), TOKENS).agree
    assert not compare_outputs(generation([1, 2]), b"not json", TOKENS).agree


def test_can_say_how_to_compare_by_the_manifest_and_keep_old_model_ids() -> None:
    fields = {"name": "m", "format": "builtin", "architecture": "mlp", "files": {}}
    fields |= {"inputs": [{"name": "input", "dtype": "F32", "shape": [None, 4]}], "outputs": ["output"]}
    plain = ModelManifest.model_validate(fields)
    assert "tolerance" not in plain.canonical_bytes().decode()
    assert tolerance_for(plain).compare == "tensors"
    strict = ModelManifest.model_validate(fields | {"tolerance": {"compare": "exact"}})
    assert strict.model_id != plain.model_id
    assert tolerance_for(strict).compare == "exact"
