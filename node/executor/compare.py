"""Do two providers' results for the same input agree? Bit for bit when both ran under the same
execution profile (the profile hash in their receipts); otherwise within the model's tolerance
(`node.executor.manifest.Tolerance`), since GPU kernels and thread counts are not bit-exact.

An output that cannot be read as the model's kind of output agrees only with identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load

from node.executor.errors import InvalidInput
from node.executor.hf_requests import parse_generation
from node.executor.manifest import Tolerance
from node.types import ResultReceipt


@dataclass(frozen=True, slots=True)
class RunResult:
    """One provider's signed answer for a job: what the comparison needs of it."""

    receipt: ResultReceipt
    signature: bytes
    output: bytes


@dataclass(frozen=True, slots=True)
class Comparison:
    agree: bool
    why: str


def compare_runs(a: RunResult, b: RunResult, tolerance: Tolerance) -> Comparison:
    if a.receipt.output_hash == b.receipt.output_hash:
        return Comparison(True, "identical outputs")
    if a.receipt.profile_hash == b.receipt.profile_hash:
        return Comparison(False, "different outputs under the same execution profile")
    return compare_outputs(a.output, b.output, tolerance)


def compare_outputs(a: bytes, b: bytes, tolerance: Tolerance) -> Comparison:
    """Whether outputs of two differently configured runs agree within `tolerance`."""
    if a == b:
        return Comparison(True, "identical outputs")
    if tolerance.compare == "exact":
        return Comparison(False, "the model's results must be identical, and these differ")
    if tolerance.compare == "tokens":
        return _compare_tokens(a, b, tolerance.prefix_tokens)
    tensors_a, tensors_b = _tensors(a), _tensors(b)
    if tensors_a is None or tensors_b is None:
        return Comparison(False, "an output is not a safetensors payload")
    if tensors_a.keys() != tensors_b.keys():
        return Comparison(
            False, f"the outputs name different tensors: {sorted(tensors_a)}, {sorted(tensors_b)}"
        )
    for name, x in tensors_a.items():
        y = tensors_b[name]
        if x.shape != y.shape:
            return Comparison(
                False, f"tensor {name!r} is {list(x.shape)} in one output, {list(y.shape)} in the other"
            )
        if tolerance.compare == "cosine":
            low = _lowest_cosine(x, y)
            if not low >= tolerance.min_cosine:
                return Comparison(
                    False, f"tensor {name!r}: cosine similarity {low:.6f} < {tolerance.min_cosine}"
                )
        elif not np.allclose(x, y, atol=tolerance.atol, rtol=tolerance.rtol, equal_nan=False):
            worst = float(np.max(np.abs(x - y))) if x.size else 0.0
            return Comparison(
                False,
                f"tensor {name!r} differs by up to {worst:.3g}, "
                f"beyond atol {tolerance.atol} and rtol {tolerance.rtol}",
            )
    return Comparison(True, f"outputs agree within the model's {tolerance.compare} tolerance")


def _tensors(data: bytes) -> dict[str, NDArray[np.float64]] | None:
    try:
        loaded = load(data)
    except Exception:  # whatever a malformed payload makes the parser raise
        return None
    try:
        return {name: np.asarray(value, dtype=np.float64) for name, value in loaded.items()}
    except (TypeError, ValueError):
        return None


def _lowest_cosine(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    rows_x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    rows_y = y.reshape(rows_x.shape)
    dots = np.sum(rows_x * rows_y, axis=1)
    norms = np.linalg.norm(rows_x, axis=1) * np.linalg.norm(rows_y, axis=1)
    # A zero vector is similar to nothing (a lazy provider's zeros must not pass).
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(norms > 0, dots / norms, 0.0)
    return float(np.min(cosines)) if cosines.size else 1.0


def _compare_tokens(a: bytes, b: bytes, prefix: int) -> Comparison:
    try:
        first, second = parse_generation(a), parse_generation(b)
    except InvalidInput:
        return Comparison(False, "an output is not a generation result")
    ids_a, ids_b = first.token_ids, second.token_ids
    need = min(prefix, max(len(ids_a), len(ids_b)))
    if ids_a[:need] != ids_b[:need]:
        return Comparison(False, f"the generations part within their first {need} tokens")
    return Comparison(True, f"the generations agree on their first {need} tokens")
