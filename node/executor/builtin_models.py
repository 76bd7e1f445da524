"""Built-in architectures (an MLP, a small transformer classifier, a small causal LM) with
deterministic weights, so tests and the devnet need no download and no committed weights.

Imports torch: used by workers, by `scripts/make_builtin_models.py` and by the subprocess that
`ModelStore.install_builtin` starts, never by the node process itself.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

if TYPE_CHECKING:
    from node.executor.manifest import ModelManifest

WEIGHTS_FILE = "weights.safetensors"

DEFAULT_CONFIGS: dict[str, dict[str, int]] = {
    "mlp": {"in_features": 64, "hidden": 256, "out_features": 16, "layers": 2},
    "transformer_classifier": {
        "vocab": 512,
        "d_model": 64,
        "heads": 4,
        "layers": 2,
        "classes": 4,
        "max_len": 128,
    },
    "causal_lm": {"vocab": 512, "d_model": 64, "heads": 4, "layers": 2, "max_len": 128},
}


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, layers: int) -> None:
        super().__init__()
        widths = [in_features] + [hidden] * layers + [out_features]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, input: Tensor) -> dict[str, Tensor]:  # named like the manifest's input tensor
        x = input
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return {"output": x}


class Block(nn.Module):
    """Pre-norm transformer block; causal attention for the LM."""

    def __init__(self, d_model: int, heads: int, *, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.up, self.down = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        out: Tensor = x + self.down(nn.functional.gelu(self.up(self.norm2(x))))
        return out


class Transformer(nn.Module):
    def __init__(
        self, vocab: int, d_model: int, heads: int, layers: int, max_len: int, *, causal: bool
    ) -> None:
        super().__init__()
        self.vocab, self.max_len = vocab, max_len
        self.embed, self.position = nn.Embedding(vocab, d_model), nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, causal=causal) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def encode(self, input_ids: Tensor) -> Tensor:
        if input_ids.shape[1] > self.max_len or input_ids.shape[1] == 0:
            raise ValueError(f"sequence length {input_ids.shape[1]} must be between 1 and {self.max_len}")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab:
            raise ValueError(f"token ids must be in [0, {self.vocab})")
        x = self.embed(input_ids) + self.position(torch.arange(input_ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        normed: Tensor = self.norm(x)
        return normed


class TransformerClassifier(Transformer):
    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, classes: int, max_len: int) -> None:
        super().__init__(vocab, d_model, heads, layers, max_len, causal=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, input_ids: Tensor) -> dict[str, Tensor]:
        return {"logits": self.head(self.encode(input_ids).mean(dim=1))}


class CausalLm(Transformer):
    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, max_len: int) -> None:
        super().__init__(vocab, d_model, heads, layers, max_len, causal=True)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, input_ids: Tensor) -> dict[str, Tensor]:
        return {"logits": self.lm_head(self.encode(input_ids))}


def build(architecture: str, config: dict[str, int]) -> nn.Module:
    """An untrained module of `architecture`; weights come from `load_state_dict`."""
    if architecture == "mlp":
        return Mlp(**config)
    if architecture == "transformer_classifier":
        return TransformerClassifier(**config)
    if architecture == "causal_lm":
        return CausalLm(**config)
    raise ValueError(f"unknown built-in architecture {architecture!r}; known: {sorted(DEFAULT_CONFIGS)}")


def deterministic_weights(module: nn.Module, seed: int) -> dict[str, Tensor]:
    """Weights drawn from one seeded generator in parameter order: same seed, same bytes."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, param in module.state_dict().items():
        if name.endswith("bias"):
            weights[name] = torch.zeros_like(param)
        elif "norm" in name:
            weights[name] = torch.ones_like(param)
        else:
            fan_in = param.shape[-1] if param.dim() > 1 else 1
            weights[name] = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
    return weights


def manifest_for(
    name: str, architecture: str, config: dict[str, int], files: dict[str, str]
) -> ModelManifest:
    # Imported here: workers import this module and should not pay for pydantic.
    from node.executor.manifest import ModelManifest, TensorSpec

    if architecture == "mlp":
        inputs = (TensorSpec(name="input", dtype="F32", shape=(None, config["in_features"])),)
        outputs: tuple[str, ...] = ("output",)
    else:
        inputs = (TensorSpec(name="input_ids", dtype="I64", shape=(None, None)),)
        outputs = ("logits",)
    return ModelManifest(
        name=name,
        format="builtin",
        architecture=architecture,
        config=config,
        files=files,
        inputs=inputs,
        outputs=outputs,
        batchable=True,
    )


def write_builtin(
    architecture: str, out_dir: Path, *, name: str | None = None, **overrides: int
) -> ModelManifest:
    """Write `weights.safetensors` and `manifest.json` for a built-in model into `out_dir`."""
    config = {**DEFAULT_CONFIGS[architecture], **overrides} if architecture in DEFAULT_CONFIGS else {}
    module = build(architecture, config)
    label = name or architecture
    seed = int.from_bytes(hashlib.sha256(f"{label}:{sorted(config.items())}".encode()).digest()[:8], "little")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_FILE
    save_file(deterministic_weights(module, seed), str(weights_path))
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    manifest = manifest_for(label, architecture, config, {WEIGHTS_FILE: digest})
    from node.executor.manifest import MANIFEST_FILE

    (out_dir / MANIFEST_FILE).write_bytes(manifest.canonical_bytes())
    return manifest


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="write a built-in model's weights and manifest")
    parser.add_argument("architecture", choices=sorted(DEFAULT_CONFIGS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=INT", help="override a config value"
    )
    args = parser.parse_args(argv)
    overrides = {key: int(value) for key, _, value in (item.partition("=") for item in args.set)}
    manifest = write_builtin(args.architecture, args.out, name=args.name, **overrides)
    sys.stdout.write(json.dumps({"model_id": manifest.model_id, "name": manifest.name}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
