"""Tiny causal LMs in the Hugging Face layout, built from a config with seeded random weights and
written with `save_pretrained`, so tests, benchmarks and the devnet run the real loading code with no
download. The tokenizer is byte-level (256 byte tokens plus an end-of-text token): any text encodes.

Imports torch and transformers: used by tests and scripts, never by the node process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

EOS = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
FAMILIES = ("gpt2", "llama", "qwen2")


def byte_tokenizer() -> Tokenizer:
    """GPT-2's byte-level encoding of the 128 ASCII bytes as a BPE with no merges: one token per
    character (ids 0..127), so whatever a model samples decodes to text, a character a token."""
    vocab = {_BYTE_SYMBOLS[b]: b for b in range(128)}
    vocab[EOS] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS])
    return tokenizer


def _byte_symbols() -> dict[int, str]:
    """GPT-2's table: printable bytes stand for themselves, the others for code points from 256."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b], extra = chr(256 + extra), extra + 1
    return table


_BYTE_SYMBOLS = _byte_symbols()


def tiny_model(
    family: str,
    *,
    layers: int = 2,
    hidden: int = 64,
    context: int = 256,
    sliding_window: int = 0,
    init_std: float = 0.02,
) -> Any:
    """A `family` model with seeded weights drawn with `init_std` (transformers' default is 0.02,
    which leaves a tiny Qwen2 echoing its last token; a wider spread gives varied greedy text).
    For Qwen2, `sliding_window` > 0 turns on sliding-window attention of that many tokens in every
    layer but the first."""
    vocab = 129  # 128 ASCII bytes and the end-of-text token
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "bos_token_id": vocab - 1,
        "eos_token_id": vocab - 1,
        "initializer_range": init_std,
    }
    model: Any
    if family == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=4, n_positions=context, **common)
        model = GPT2LMHeadModel(config)
    elif family in ("llama", "qwen2"):
        config_class: Any = LlamaConfig if family == "llama" else Qwen2Config
        model_class: Any = LlamaForCausalLM if family == "llama" else Qwen2ForCausalLM
        llama_config = config_class(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            tie_word_embeddings=family == "qwen2",
            **common,
            **_sliding(family, sliding_window, layers),
        )
        model = model_class(llama_config)
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return model.eval()


def _sliding(family: str, window: int, layers: int) -> dict[str, Any]:
    if not window:
        return {}
    if family != "qwen2":
        raise ValueError(f"a sliding window is made for qwen2 models here, not {family}")
    return {"use_sliding_window": True, "sliding_window": window, "max_window_layers": min(1, layers - 1)}


def write_tiny(family: str, out: Path, *, seed: int = 0, **sizes: Any) -> Path:
    """Write a tiny `family` model with seeded weights, its tokenizer and chat template to `out`."""
    torch.manual_seed(seed)
    model = tiny_model(family, **sizes)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    byte_tokenizer().save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "eos_token": EOS,
        "bos_token": EOS,
        "model_max_length": model.config.max_position_embeddings
        if family != "gpt2"
        else model.config.n_positions,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return out


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="write a tiny Hugging Face causal LM with seeded weights")
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args(argv)
    write_tiny(
        args.family, args.out, seed=args.seed, layers=args.layers, hidden=args.hidden, context=args.context
    )
    sys.stdout.write(f"{args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
