"""Jobs for Hugging Face models: JSON requests in, JSON text or safetensors vectors out.

A `generate` job is `{"prompt": "…"}` or `{"messages": [{"role": "user", "content": "…"}]}` (put
through the model's chat template) with optional `max_tokens`, `temperature` (0: greedy), `top_p`,
`stop` and `seed`; its result is JSON (`GenerationResult`). An `embed` job is `{"texts": […]}`; its
result is safetensors bytes holding `embeddings`, F32 `[texts, dimension]`.

The node checks a request here before it is queued; the worker reads only the fields named here.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.executor.errors import InvalidInput
from node.executor.manifest import ModelManifest

MAX_TEXT_CHARS = 200_000
EMBED_OUTPUT = "embeddings"


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TEXT_CHARS)


class GenerateRequest(BaseModel):
    """Sampling settings follow the usual meaning; `seed` makes a sampled output reproducible."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    messages: tuple[ChatMessage, ...] | None = Field(default=None, min_length=1, max_length=256)
    max_tokens: int = Field(default=16, ge=1, le=8192)
    temperature: float = Field(default=1.0, ge=0.0, le=10.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: tuple[str, ...] = Field(default=(), max_length=8)
    seed: int | None = Field(default=None, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if any(not 0 < len(s) <= 200 for s in self.stop):
            raise ValueError("each stop sequence is 1 to 200 characters")
        return self


class EmbedRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    texts: tuple[str, ...] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _bounded(self) -> EmbedRequest:
        if any(len(text) > MAX_TEXT_CHARS for text in self.texts):
            raise ValueError(f"each text is at most {MAX_TEXT_CHARS} characters")
        return self


class GenerationResult(BaseModel):
    """A generation's whole output. `finish_reason`: `stop` (a stop sequence came; it is cut from
    `text`), `eos` (the model ended), `length` (max_tokens or the context ran out)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    token_ids: tuple[int, ...]
    finish_reason: Literal["stop", "eos", "length", "cancelled"]
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


def parse_request(manifest: ModelManifest, data: bytes) -> GenerateRequest | EmbedRequest:
    """The request a job's bytes hold for `manifest`'s task; `InvalidInput` saying what is wrong."""
    task = manifest.task
    kind: type[GenerateRequest] | type[EmbedRequest] = GenerateRequest if task == "generate" else EmbedRequest
    try:
        return kind.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidInput(
            f"{task} request for model {manifest.name} is invalid: {where}: {first['msg']}"[:500],
            hint=_HINTS[kind],
        ) from None


def parse_generation(data: bytes) -> GenerationResult:
    try:
        return GenerationResult.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidInput(f"not a generation result: {exc.errors()[0]['msg']}") from None


def encode_request(request: GenerateRequest | EmbedRequest) -> bytes:
    return json.dumps(request.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode()


_HINTS: dict[type[BaseModel], str] = {
    GenerateRequest: 'send JSON like {"prompt": "Hello", "max_tokens": 32, "temperature": 0}',
    EmbedRequest: 'send JSON like {"texts": ["first sentence", "second sentence"]}',
}
