"""Hugging Face models inside the worker: built from the config's values, weights from safetensors
bytes, so `transformers` never opens, imports or unpickles anything from the model's directory
(it is never given one), and never reaches a network (the worker sets the offline switches and
the sandbox has none).

Generation is our own decoding over the model's forward pass with its KV cache (`Decoding`: sampling
with a per-request seeded generator, so a seed plus the deterministic profile gives the same
tokens), several requests decoded together by `hf_batching`; embeddings pool the last hidden
state as the model's sentence-transformers modules say.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from tokenizers import Tokenizer

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
os.environ.setdefault("HF_HOME", "/tmp/hf")  # noqa: S108  (the sandbox's private tmpfs)

import transformers

# By name, as `hf_model.ARCHITECTURES` allows them: (model class, config class).
_CLASSES: dict[str, tuple[str, str]] = {
    "GPT2LMHeadModel": ("GPT2LMHeadModel", "GPT2Config"),
    "LlamaForCausalLM": ("LlamaForCausalLM", "LlamaConfig"),
    "Qwen2ForCausalLM": ("Qwen2ForCausalLM", "Qwen2Config"),
    "BertModel": ("BertModel", "BertConfig"),
    "RobertaModel": ("RobertaModel", "RobertaConfig"),
}
# Keys old checkpoints carry that are computed, not loaded (buffers rebuilt at construction).
_COMPUTED_SUFFIXES = ("position_ids", "rotary_emb.inv_freq", "attn.bias", "attn.masked_bias")
_EMBED_CHUNK = 64
# A UTF-8 sequence is at most 4 bytes and every token at least one: 4 tokens on, it has ended.
_SETTLING_TOKENS = 4
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class RequestRefused(ValueError):
    """The request cannot run on this model as it is; the worker reports it and stays warm."""

    refused_input = True


@dataclass
class LoadedModel:
    manifest: dict[str, Any]
    spec: dict[str, Any]
    model: Any
    tokenizer: Tokenizer
    chat: Any  # a transformers tokenizer, for the chat template alone
    device: str
    eos_ids: frozenset[int]
    # Why requests on this model are decoded one at a time rather than batched; None: batched.
    unbatched: str | None = None

    def run(self, items: list[bytes]) -> list[bytes]:
        """A batch of embedding requests (generation requests are batched by `hf_batching`)."""
        return [self.embed(json.loads(item)) for item in items]

    # -- embeddings ---------------------------------------------------------------------------

    def embed(self, request: dict[str, Any]) -> bytes:
        texts = [str(text) for text in request["texts"]]
        vectors = [self._embed_chunk(texts[i : i + _EMBED_CHUNK]) for i in range(0, len(texts), _EMBED_CHUNK)]
        return bytes(save_tensors({"embeddings": torch.cat(vectors).to("cpu", torch.float32).contiguous()}))

    def _embed_chunk(self, texts: list[str]) -> torch.Tensor:
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        pad = int(self.model.config.pad_token_id or 0)
        ids = torch.full((len(texts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
            mask[row, : len(encoding.ids)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
        ).last_hidden_state
        hidden = hidden.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooling = self.spec["pooling"]
        if pooling == "cls":
            pooled = hidden[:, 0]
        elif pooling == "max":
            pooled = hidden.masked_fill(weights == 0, float("-inf")).amax(dim=1)
        else:
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.spec["normalize"]:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled  # type: ignore[no-any-return]

    # -- generation -----------------------------------------------------------------------------

    def prompt_ids(self, request: dict[str, Any]) -> list[int]:
        if request.get("messages") is not None:
            if self.chat is None or not getattr(self.chat, "chat_template", None):
                raise RequestRefused(f"model {self.manifest['name']} has no chat template: send a prompt")
            text = self.chat.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in request["messages"]],
                tokenize=False,
                add_generation_prompt=True,
            )
            ids = list(self.tokenizer.encode(text, add_special_tokens=False).ids)
        else:
            ids = list(self.tokenizer.encode(str(request["prompt"])).ids)
        context = int(self.spec["context_length"])
        if not ids:
            raise RequestRefused("the prompt encodes to no tokens")
        if len(ids) >= context:
            raise RequestRefused(
                f"the prompt is {len(ids)} tokens; model {self.manifest['name']} has a context of "
                f"{context} tokens, prompt and output together"
            )
        return ids

    def generate(
        self,
        request: dict[str, Any],
        emit: Callable[[str], None] | None,
        cancelled: Callable[[], bool] | None,
    ) -> bytes:
        """One request on its own: a batch of one (`hf_batching` decodes several together)."""
        from node.executor.hf_batching import DecodeBatch

        batch = DecodeBatch(self)
        decoding = Decoding(self, request, emit)
        if not batch.join(0, decoding):
            while batch.rows:
                if cancelled is not None and cancelled():
                    batch.drop(0)
                    decoding.finish = "cancelled"
                    break
                batch.step()
        return decoding.result()


class Decoding:
    """One generation request between decoding steps: its prompt, sampler, stop sequences and
    budget, the text made so far and how much of it was streamed. `finish` is set once it is done."""

    def __init__(
        self,
        model: LoadedModel,
        request: dict[str, Any],
        emit: Callable[[str], None] | None,
        interval_s: float = 0.0,
    ) -> None:
        self.ids = model.prompt_ids(request)
        self.budget = min(
            int(request.get("max_tokens", 16)), int(model.spec["context_length"]) - len(self.ids)
        )
        self.sampler = Sampler(request)
        self.stops = tuple(str(s) for s in request.get("stop", ()))
        self.text = _IncrementalText(model.tokenizer)
        self.eos_ids = model.eos_ids
        self.emit = emit
        self.emitted = 0
        # Text is sent at most this often after the first piece: each piece costs a message, a
        # frame and their handling on every hop, and the first piece alone decides the latency.
        self.interval_s = interval_s
        self._emitted_at = 0.0
        self.finish: str | None = None

    @property
    def last_token(self) -> int:
        return self.text.tokens[-1]

    def take(self, logits: torch.Tensor) -> bool:
        """Sample the next token from `logits`; whether the request is done."""
        token = self.sampler.next(logits)
        if token in self.eos_ids:
            self.finish = "eos"
            return True
        so_far = self.text.add(token)
        cut = _first_stop(so_far, self.stops)
        if cut is not None:
            self.text.cut(cut)
            self.finish = "stop"
            return True
        if self.emit is not None:
            ready = _streamable(so_far, self.stops, self.text.settled)
            now = time.monotonic()
            if ready > self.emitted and (not self.emitted or now - self._emitted_at >= self.interval_s):
                self.emit(so_far[self.emitted : ready])
                self.emitted, self._emitted_at = ready, now
        if len(self.text.tokens) >= self.budget:
            self.finish = "length"
            return True
        return False

    def result(self) -> bytes:
        """The whole output as JSON, once the rest of its text has been streamed."""
        if self.emit is not None and len(self.text.text) > self.emitted:
            self.emit(self.text.text[self.emitted :])
            self.emitted = len(self.text.text)
        result = {
            "text": self.text.text,
            "token_ids": self.text.tokens,
            "finish_reason": self.finish or "length",
            "prompt_tokens": len(self.ids),
            "completion_tokens": len(self.text.tokens),
        }
        return json.dumps(result, separators=(",", ":")).encode()


class _IncrementalText:
    """The text of a growing list of tokens, decoded a few tokens at a time.

    Text that ends on a whole character is kept and never decoded again: the bytes after it start
    afresh. A UTF-8 sequence is at most 4 bytes and a token at least one, so the text of all but
    the last `_SETTLING_TOKENS` tokens is final (`settled`) once it is a prefix of the text of them
    all (else a sequence they began was completed since): invalid bytes are sent on, not held."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.tokens: list[int] = []
        self._kept, self._kept_upto = "", 0
        self.text = ""
        self.settled = 0  # characters of `text` no later token changes

    def add(self, token: int) -> str:
        self.tokens.append(token)
        tail = self._decode(self._kept_upto, len(self.tokens))
        settled_tail = 0
        if len(self.tokens) - self._kept_upto > _SETTLING_TOKENS:
            upto = len(self.tokens) - _SETTLING_TOKENS
            head = self._decode(self._kept_upto, upto)
            if tail.startswith(head):
                settled_tail = len(head)
                if head and not head.endswith("\ufffd"):  # ends on a whole character
                    self._kept, self._kept_upto, tail = self._kept + head, upto, tail[len(head) :]
                    settled_tail = 0
        self.text = self._kept + tail
        self.settled = len(self._kept) + settled_tail
        return self.text

    def cut(self, length: int) -> None:
        self.text = self.text[:length]

    def _decode(self, start: int, end: int) -> str:
        return str(self._tokenizer.decode(self.tokens[start:end], skip_special_tokens=True))


class Sampler:
    """Greedy at temperature 0, else temperature and nucleus (top-p) sampling from a generator
    seeded per request: the same seed and logits give the same token on any run."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.temperature = float(request.get("temperature", 1.0))
        self.top_p = float(request.get("top_p", 1.0))
        seed = request.get("seed")
        self.generator = torch.Generator().manual_seed(
            int(seed) if seed is not None else secrets.randbits(63)
        )

    def next(self, logits: torch.Tensor) -> int:
        if self.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.to("cpu", torch.float64) / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(ordered, dim=-1) - ordered < self.top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


def _streamable(text: str, stops: tuple[str, ...], settled: int = 0) -> int:
    """How much of `text` can be sent now: not a trailing partial character (unless `settled`
    says it is final), nor a tail that may yet grow into a stop sequence (which is cut from the
    output, never sent)."""
    end = len(text)
    while end > settled and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end = min(end, len(text[:end]) - size)
                break
    return end


def load(manifest: dict[str, Any], blobs: dict[str, bytes], device: str) -> LoadedModel:
    spec = manifest["hf"]
    model_name, config_name = _CLASSES[spec["architecture"]]
    config_values = json.loads(blobs["config.json"])
    config = getattr(transformers, config_name).from_dict(config_values)
    model = getattr(transformers, model_name)(config)
    state: dict[str, torch.Tensor] = {}
    for name in sorted(blobs):
        if name.endswith(".safetensors"):
            state.update(load_tensors(blobs[name]))
    _load_weights(model, state)
    dtype = _DTYPES.get(spec["precision"], torch.float32) if device != "cpu" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    if spec.get("quantization") == "int8":
        model = _int8(model, device)
    tokenizer = Tokenizer.from_str(blobs["tokenizer.json"].decode())
    tokenizer.no_padding()
    if spec["task"] == "embed":
        tokenizer.enable_truncation(int(spec["context_length"]))
    else:
        tokenizer.no_truncation()
    chat = _chat_tokenizer(tokenizer, blobs)
    return LoadedModel(
        manifest, spec, model, tokenizer, chat, device, _eos_ids(config_values, blobs), _unbatched(config)
    )


def _unbatched(config: Any) -> str | None:
    """Why this model's requests cannot share a decoding batch, or None if they can.

    A layer with sliding-window attention keeps only the last `sliding_window` positions of its
    cache, each row's own: rows of different lengths no longer line up column by column with the
    full-attention layers' caches and the batch's one padding mask, so merging a joining request's
    cache on the left would misplace its keys (or fail outright)."""
    layer_types = getattr(config, "layer_types", None) or ()
    if "sliding_attention" in layer_types and getattr(config, "sliding_window", None):
        return (
            f"its sliding-window attention (a window of {config.sliding_window} tokens) keeps a cache "
            "that rows of different lengths cannot share: requests are decoded one at a time"
        )
    return None


def int8_quantizer(device: str) -> str:
    """What quantizes an int8 variant on `device`: its output bits depend on it, so the execution
    profile records it (two providers agree bit for bit only with the same quantizer)."""
    if device == "cpu":
        return f"torch-{torch.__version__}-dynamic-int8"
    from importlib.metadata import version

    return f"torchao-{version('torchao')}-int8-weight-only"


def _int8(model: Any, device: str) -> Any:
    """The int8 variant of `model`: on the CPU, torch's own dynamic quantization of the Linear
    layers (weights int8, activations quantized per call); on CUDA, torchao's int8 weight-only
    quantization (torch's dynamic quantization has no CUDA kernels)."""
    if device != "cpu":
        return int8_weight_only(model)
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice, once per worker
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]


def int8_weight_only(model: Any) -> Any:
    """torchao's int8 weight-only quantization of the Linear layers, in place, on the model's own
    device (CUDA in workers; it runs on the CPU too, slower than dynamic quantization there)."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise ValueError("int8 variants on CUDA need torchao: pip install 'gpunode[cuda]'") from exc

    quantize_(model, Int8WeightOnlyConfig())
    return model


def _load_weights(model: Any, state: dict[str, torch.Tensor]) -> None:
    prefix = f"{model.base_model_prefix}."
    own = set(model.state_dict())
    if not any(key in own for key in state) and any(key.startswith(prefix) for key in state):
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    elif not any(key in own for key in state):
        state = {prefix + key: value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.endswith(_COMPUTED_SUFFIXES) or key in own}
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = {p.data_ptr() for key, p in model.state_dict().items() if key in state}
    untied = [
        key
        for key in missing
        if model.state_dict()[key].data_ptr() not in loaded and not key.endswith(_COMPUTED_SUFFIXES)
    ]
    if untied or unexpected:
        raise ValueError(f"weights do not fit the model: missing {untied[:5]}, unexpected {unexpected[:5]}")


def _chat_tokenizer(tokenizer: Tokenizer, blobs: dict[str, bytes]) -> Any:
    config = json.loads(blobs["tokenizer_config.json"]) if "tokenizer_config.json" in blobs else {}
    template = config.get("chat_template")
    if "chat_template.jinja" in blobs:
        template = blobs["chat_template.jinja"].decode()
    if not isinstance(template, str):
        return None
    special = {
        key: _token_text(config.get(key)) for key in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    # Rendered by transformers in its sandboxed Jinja environment: a template is data, not code.
    return transformers.PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, chat_template=template, **{k: v for k, v in special.items() if v}
    )


def _token_text(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _eos_ids(config: dict[str, Any], blobs: dict[str, bytes]) -> frozenset[int]:
    found: set[int] = set()
    sources = [config]
    if "generation_config.json" in blobs:
        sources.append(json.loads(blobs["generation_config.json"]))
    for source in sources:
        value = source.get("eos_token_id")
        values = value if isinstance(value, list) else [value]
        found.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return frozenset(found)
