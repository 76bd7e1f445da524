"""The model manifest: what a model is, which files make it, what it takes and returns.

A model's id is sha256 of its canonical manifest, and the manifest pins each file's sha256, so the
id commits to every byte a worker loads (content addressing end to end).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.errors import ModelStoreError
from node.executor.errors import InvalidInput
from node.executor.wire import DTYPE_SIZES, TensorPayload

MANIFEST_FILE = "manifest.json"
BUILTIN_ARCHITECTURES = ("mlp", "transformer_classifier", "causal_lm")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TensorSpec(BaseModel):
    """One named input; `None` in `shape` is a free dimension (dim 0 is the batch when batchable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    dtype: str
    shape: tuple[int | None, ...] = Field(max_length=8)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPE_SIZES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_SIZES)}")
        return value


Task = Literal["generate", "embed"]
Pooling = Literal["mean", "cls", "max"]
Quantization = Literal["int8"]


class HfSpec(BaseModel):
    """What a Hugging Face model directory is: its task, class, precision and limits.

    `architecture` is the `transformers` class named by the directory's `config.json`, one of those
    `hf_model` allows; `precision` the safetensors dtype of its weights (`served_precision` is
    what it runs in: `int8` for a quantized variant); `pooling` and `normalize` (embeddings) come
    from its sentence-transformers modules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    architecture: str = Field(min_length=1, max_length=100)
    model_type: str = Field(min_length=1, max_length=100)
    precision: str
    context_length: int = Field(gt=0)
    pooling: Pooling | None = None
    normalize: bool = False
    # A variant the worker quantizes at load (weights stay as stored): a distinct model id.
    quantization: Quantization | None = None

    @property
    def served_precision(self) -> str:
        return self.quantization or self.precision

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in DTYPE_SIZES:
            raise ValueError(f"precision must be one of {sorted(DTYPE_SIZES)}")
        return value


Comparison = Literal["exact", "tensors", "cosine", "tokens"]


class Tolerance(BaseModel):
    """How two honest runs of the model may differ when their execution profiles differ (GPU
    kernels are not bit-exact): `exact` bytes; `tensors` element-wise within `atol + rtol·|b|`;
    `cosine` row-wise similarity of vectors at least `min_cosine` (embeddings); `tokens` the same
    first `prefix_tokens` generated token ids (greedy decoding may part at a near tie later on).
    Runs under the same profile must always agree byte for byte."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    compare: Comparison
    atol: float = Field(default=1e-4, ge=0, le=1)
    rtol: float = Field(default=1e-3, ge=0, le=1)
    min_cosine: float = Field(default=0.999, ge=0, le=1)
    prefix_tokens: int = Field(default=8, ge=1, le=4096)


class ModelManifest(BaseModel):
    """`format` is `builtin` (an architecture of ours + safetensors weights), `torch_export` (.pt2)
    or `huggingface` (a `transformers` model directory: safetensors, config and tokenizer; jobs are
    JSON requests, see `hf_requests`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["gpunode/model/1"] = "gpunode/model/1"
    name: str = Field(min_length=1, max_length=100)
    format: Literal["builtin", "torch_export", "huggingface"]
    architecture: str | None = None
    config: dict[str, int] = Field(default_factory=dict)
    files: dict[str, str]
    inputs: tuple[TensorSpec, ...] = Field(default=(), max_length=16)
    outputs: tuple[str, ...] = Field(default=(), max_length=16)
    batchable: bool = False
    hf: HfSpec | None = None
    # Left out, the model's format says how to compare (`tolerance_for`).
    tolerance: Tolerance | None = None

    @model_validator(mode="after")
    def _fits_format(self) -> ModelManifest:
        if (self.format == "huggingface") != (self.hf is not None):
            raise ValueError("a huggingface model, and only one, carries its hf description")
        if self.hf is None and (not self.inputs or not self.outputs):
            raise ValueError("a tensor model names at least one input and one output")
        return self

    @field_validator("files")
    @classmethod
    def _safe_files(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if not _FILE_NAME.match(name) or name == MANIFEST_FILE:
                raise ValueError(f"file name {name!r} must be a plain name (letters, digits, . _ -)")
            if not _HEX64.match(digest):
                raise ValueError(f"file {name!r}: sha256 must be 64 lowercase hex digits")
        return value

    def canonical_bytes(self) -> bytes:
        # `hf` and `tolerance` are left out when absent, so the ids of models made before them
        # stay what they were.
        absent = {name for name in ("hf", "tolerance") if getattr(self, name) is None}
        fields = self.model_dump(mode="json", exclude=absent or None)
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @property
    def task(self) -> str | None:
        """`generate` or `embed` for a Hugging Face model; None for a tensor model."""
        return self.hf.task if self.hf is not None else None

    @property
    def model_id(self) -> str:
        """Hex sha256 of the canonical manifest; `bytes.fromhex` gives the receipt's bytes32."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def check_input(self, payload: TensorPayload) -> None:
        """Reject inputs whose names, dtypes or fixed dimensions do not fit this model."""
        expected = {spec.name: spec for spec in self.inputs}
        got = {tensor.name: tensor for tensor in payload.tensors}
        if set(got) != set(expected):
            raise InvalidInput(
                f"model {self.name} takes tensors {sorted(expected)}, the input has {sorted(got)}"
            )
        for name, spec in expected.items():
            tensor = got[name]
            fits = len(tensor.shape) == len(spec.shape) and all(
                want is None or want == have for want, have in zip(spec.shape, tensor.shape, strict=True)
            )
            if tensor.dtype != spec.dtype or not fits:
                raise InvalidInput(
                    f"tensor {name!r} is {tensor.dtype}{list(tensor.shape)}, "
                    f"model {self.name} wants {spec.dtype}{list(spec.shape)} (None = any size)"
                )
        if self.batchable and len({t.shape[0] for t in payload.tensors}) != 1:
            raise InvalidInput(f"every input of model {self.name} must have the same size along dim 0")


def tolerance_for(manifest: ModelManifest) -> Tolerance:
    """How to compare two runs of `manifest`'s model: its own tolerance, else its format's."""
    if manifest.tolerance is not None:
        return manifest.tolerance
    if manifest.task == "generate":
        return Tolerance(compare="tokens")
    if manifest.task == "embed":
        return Tolerance(compare="cosine")
    return Tolerance(compare="tensors")


def parse_manifest(data: bytes) -> ModelManifest:
    try:
        return ModelManifest.model_validate_json(data)
    except ValidationError as exc:
        raise ModelStoreError(
            f"model manifest is invalid: {exc.errors()[0]['msg']} at "
            f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}"
        ) from exc


def normalize_model_id(model_id: str | bytes) -> str:
    """Accept the hex id (with or without 0x) or the raw bytes32; return lowercase hex."""
    text = model_id.hex() if isinstance(model_id, bytes) else model_id.lower().removeprefix("0x")
    if not _HEX64.match(text):
        raise InvalidInput(f"model id {model_id!r} is not a sha256 (64 hex digits or 32 bytes)")
    return text
