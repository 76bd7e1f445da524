"""OpenAI's request bodies, checked, and the job inputs they become; the responses they expect.

Pure: no I/O. A request names the model by its id (64 hex digits) or its name, as `/v1/models`
lists them. Unknown fields are ignored, as OpenAI's SDKs send some this node has no use for; known
ones are checked strictly.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from node.executor.hf_requests import GenerationResult
from node.http.errors import HttpError

# OpenAI's finish reasons for ours ("cancelled" never reaches a caller that is still listening).
FINISH_REASONS = {"stop": "stop", "eos": "stop", "length": "length", "cancelled": "stop"}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=200)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    include_usage: bool = False


class _Sampling(_Request):
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def generation(self) -> dict[str, Any]:
        """The generate job's sampling fields (`node.executor.hf_requests.GenerateRequest`)."""
        fields: dict[str, Any] = {"max_tokens": self.max_completion_tokens or self.max_tokens or 16}
        if self.temperature is not None:
            fields["temperature"] = self.temperature
        if self.top_p is not None:
            fields["top_p"] = self.top_p
        if self.stop:
            fields["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        if self.seed is not None:
            fields["seed"] = self.seed
        return fields


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise HttpError("only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=256)

    def job_input(self) -> bytes:
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]
        return _compact({"messages": messages, **self.generation()})


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(min_length=1)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("give one prompt")
        return value

    def job_input(self) -> bytes:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return _compact({"prompt": prompt, **self.generation()})


class EmbeddingRequest(_Request):
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= 1024:
            raise ValueError("give 1 to 1024 texts")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input

    def job_input(self) -> bytes:
        return _compact({"texts": self.texts()})


R = TypeVar("R", bound=_Request)


def parse_body(kind: type[R], body: bytes) -> R:
    """The request in `body`, or a 400 in OpenAI's shape naming the first bad field."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise HttpError("the request body must be a JSON object")
    try:
        return kind.model_validate(decoded)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise HttpError(f"{where or 'request'}: {first['msg']}", param=where) from None


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# responses ---------------------------------------------------------------------------------------


def usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def chat_completion(job_id: str, model: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": FINISH_REASONS[result.finish_reason],
                "logprobs": None,
            }
        ],
        "usage": usage(result),
    }


def text_completion(job_id: str, model: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": f"cmpl-{job_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": result.text,
                "finish_reason": FINISH_REASONS[result.finish_reason],
                "logprobs": None,
            }
        ],
        "usage": usage(result),
    }


def chunk(job_id: str, model: str, *, chat: bool, text: str | None, finish: str | None) -> dict[str, Any]:
    """One streamed piece (`text`), or the last chunk carrying only the finish reason."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["delta"] = {} if text is None else {"role": "assistant", "content": text}
    else:
        choice["text"] = text or ""
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{job_id}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def usage_chunk(job_id: str, model: str, result: GenerationResult, *, chat: bool) -> dict[str, Any]:
    """The chunk after the last that `stream_options.include_usage` asks for: no choices, the usage."""
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{job_id}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": usage(result),
    }


def embeddings(model: str, vectors: list[list[float]] | Any, encoding: str, tokens: int) -> dict[str, Any]:
    """`vectors`: a float32 array [texts, dimension]."""
    data = []
    for index, vector in enumerate(vectors):
        value: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if encoding == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def model_list(offers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m, "object": "model", **o} for m, o in sorted(offers.items())]}
