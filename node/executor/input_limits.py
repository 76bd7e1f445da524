"""Checks on a job's values that the node can make before the job is batched with others.

Shapes and dtypes are checked against the manifest (`ModelManifest.check_input`); this adds what
our own built-in architectures are known to refuse at run time (token ids outside the vocabulary,
sequences past the position table). Caught here, such an input fails alone and costs no worker run;
caught in a worker, it would fail its whole batch first.
"""

from __future__ import annotations

import numpy as np

from node.executor.errors import InvalidInput
from node.executor.manifest import ModelManifest
from node.executor.wire import TensorPayload

_TOKEN_ARCHITECTURES = frozenset({"causal_lm", "transformer_classifier"})


def scans_values(manifest: ModelManifest) -> bool:
    """Whether `check_builtin_values` reads a job's tensors (not only their header) for this model."""
    return manifest.format == "builtin" and manifest.architecture in _TOKEN_ARCHITECTURES


def check_builtin_values(manifest: ModelManifest, payload: TensorPayload, data: bytes) -> None:
    """Refuse token ids outside [0, vocab) and sequences longer than max_len for our transformers."""
    if not scans_values(manifest):
        return
    vocab, max_len = manifest.config.get("vocab"), manifest.config.get("max_len")
    for tensor in payload.tensors:
        if tensor.name != "input_ids" or tensor.dtype != "I64":
            continue
        if len(tensor.shape) != 2 or 0 in tensor.shape:
            raise InvalidInput(
                f"input_ids must be [rows, tokens] with at least one of each, got {list(tensor.shape)}"
            )
        if max_len is not None and tensor.shape[1] > max_len:
            raise InvalidInput(
                f"input_ids has {tensor.shape[1]} tokens a row; model {manifest.name} takes {max_len} at most"
            )
        start, end = tensor.offsets
        ids = np.frombuffer(data, dtype="<i8", count=(end - start) // 8, offset=payload.body_start + start)
        if vocab is not None and ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise InvalidInput(
                f"input_ids holds token ids outside [0, {vocab}), the vocabulary of model {manifest.name}"
            )
