"""Hugging Face model directories in the store: what is taken, and every way to ask for code refused.

Each attack builds a directory that would run code if a loader trusted it, and checks the store
refuses it with an error naming the file, and that nothing of it was installed.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from executor_support import malicious_pickle
from hf_support import MINILM_DIR, HfModels, copy_model

from node.errors import ModelStoreError
from node.executor.errors import UnsafeModelFile
from node.executor.hf_model import read_hf_dir
from node.executor.manifest import MANIFEST_FILE, ModelManifest, parse_manifest
from node.executor.store import ModelStore


def fresh_store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store", capacity_bytes=2**30)


def assert_nothing_installed(store: ModelStore) -> None:
    assert store.models() == []
    staging = store.root / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def edit_json(path: Path, **changes: object) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def test_can_install_tiny_causal_lms_with_their_task_and_precision(hf_models: HfModels) -> None:
    for manifest, architecture in (
        (hf_models.gpt2, "GPT2LMHeadModel"),
        (hf_models.llama, "LlamaForCausalLM"),
        (hf_models.qwen2, "Qwen2ForCausalLM"),
    ):
        assert manifest.format == "huggingface"
        assert manifest.hf is not None
        assert (manifest.hf.task, manifest.hf.architecture, manifest.hf.precision) == (
            "generate",
            architecture,
            "F32",
        )
        assert manifest.hf.context_length == 256
        stored = hf_models.store.verify(manifest.model_id)
        assert stored == manifest
        assert set(manifest.files) >= {"config.json", "model.safetensors", "tokenizer.json"}


def test_can_install_minilm_with_its_sentence_transformers_pooling(hf_models: HfModels) -> None:
    spec = hf_models.minilm.hf
    assert spec is not None
    assert (spec.task, spec.architecture, spec.pooling, spec.normalize) == (
        "embed",
        "BertModel",
        "mean",
        True,
    )
    assert spec.context_length == 256  # sentence_bert_config's max_seq_length, under the config's 512
    # Only what a worker loads is stored: no README, no vocab.txt, no sub-directories.
    assert set(hf_models.minilm.files) == {
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }


def test_can_address_a_model_by_its_content(hf_models: HfModels, tmp_path: Path) -> None:
    again, _ = read_hf_dir(hf_models.dirs["gpt2"], name="tiny-gpt2")
    assert again.model_id == hf_models.gpt2.model_id
    changed = copy_model(hf_models.dirs["gpt2"], tmp_path)
    edit_json(changed / "generation_config.json", eos_token_id=5)
    other, _ = read_hf_dir(changed, name="tiny-gpt2")
    assert other.model_id != hf_models.gpt2.model_id


def test_can_keep_tensor_model_ids_unchanged_by_the_hf_field() -> None:
    manifest = ModelManifest.model_validate(
        {
            "name": "m",
            "format": "builtin",
            "architecture": "mlp",
            "files": {"weights.safetensors": "0" * 64},
            "inputs": [{"name": "input", "dtype": "F32", "shape": [None, 4]}],
            "outputs": ["output"],
        }
    )
    assert b'"hf"' not in manifest.canonical_bytes()


def test_cannot_install_a_directory_with_a_pickle_checkpoint(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["gpt2"], tmp_path)
    marker = tmp_path / "pwned"
    (model / "pytorch_model.bin").write_bytes(malicious_pickle(f"touch {marker}"))
    store = fresh_store(tmp_path)
    with pytest.raises(UnsafeModelFile, match=r"pytorch_model\.bin is a pickle"):
        store.import_hf_dir(model)
    assert not marker.exists()
    assert_nothing_installed(store)


def test_cannot_pass_a_pickle_off_as_safetensors(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["llama"], tmp_path)
    (model / "model.safetensors").write_bytes(malicious_pickle())
    store = fresh_store(tmp_path)
    with pytest.raises(UnsafeModelFile, match=r"model\.safetensors is a pickle"):
        store.import_hf_dir(model)
    assert_nothing_installed(store)


def test_cannot_install_a_pickle_hidden_in_a_sub_directory(tmp_path: Path) -> None:
    model = tmp_path / "minilm"
    shutil.copytree(MINILM_DIR, model)
    (model / "1_Pooling" / "extra.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeModelFile, match=r"extra\.pkl"):
        fresh_store(tmp_path).import_hf_dir(model)


@pytest.mark.parametrize("key", ["auto_map", "trust_remote_code", "custom_pipelines"])
def test_cannot_install_a_config_asking_for_remote_code(
    hf_models: HfModels, tmp_path: Path, key: str
) -> None:
    model = copy_model(hf_models.dirs["qwen2"], tmp_path)
    value: object = (
        {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"} if key != "trust_remote_code" else True
    )
    edit_json(model / "config.json", **{key: value})
    store = fresh_store(tmp_path)
    with pytest.raises(UnsafeModelFile, match=f"config\\.json asks for remote code \\({key}\\)"):
        store.import_hf_dir(model)
    assert_nothing_installed(store)


def test_cannot_install_a_tokenizer_config_pointing_at_code(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["gpt2"], tmp_path)
    edit_json(
        model / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    )
    with pytest.raises(UnsafeModelFile, match=r"tokenizer_config\.json asks for remote code"):
        fresh_store(tmp_path).import_hf_dir(model)
    edit_json(model / "tokenizer_config.json", auto_map=None)
    value = json.loads((model / "tokenizer_config.json").read_text())
    del value["auto_map"]
    value["tokenizer_class"] = "tokenization_evil.EvilTokenizer"
    (model / "tokenizer_config.json").write_text(json.dumps(value))
    with pytest.raises(UnsafeModelFile, match=r"tokenizer_config\.json asks for remote code"):
        fresh_store(tmp_path).import_hf_dir(model)


def test_cannot_install_a_directory_carrying_python(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["llama"], tmp_path)
    (model / "modeling_llama.py").write_text("import os; os.system('touch /tmp/pwned')\n")
    with pytest.raises(UnsafeModelFile, match=r"modeling_llama\.py is code"):
        fresh_store(tmp_path).import_hf_dir(model)


def test_cannot_install_custom_sentence_transformers_modules(tmp_path: Path) -> None:
    model = tmp_path / "minilm"
    shutil.copytree(MINILM_DIR, model)
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Evil", "type": "evil_package.EvilModule"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsafeModelFile, match=r"modules\.json names module 'evil_package\.EvilModule'"):
        fresh_store(tmp_path).import_hf_dir(model)


def test_cannot_install_a_symbolic_link(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["gpt2"], tmp_path)
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeModelFile, match="symbolic link"):
        fresh_store(tmp_path).import_hf_dir(model)


@pytest.mark.parametrize("architecture", ["MistralForCausalLM", "EvilModel", ""])
def test_cannot_install_an_architecture_not_allowed_by_name(
    hf_models: HfModels, tmp_path: Path, architecture: str
) -> None:
    model = copy_model(hf_models.dirs["gpt2"], tmp_path)
    edit_json(model / "config.json", architectures=[architecture])
    store = fresh_store(tmp_path)
    with pytest.raises(ModelStoreError, match="is not one this node runs"):
        store.import_hf_dir(model)
    assert_nothing_installed(store)


def test_cannot_pair_an_allowed_class_with_another_model_type(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["gpt2"], tmp_path)
    edit_json(model / "config.json", model_type="evil")
    with pytest.raises(ModelStoreError, match="needs model_type 'gpt2'"):
        fresh_store(tmp_path).import_hf_dir(model)


def test_cannot_install_without_a_fast_tokenizer(hf_models: HfModels, tmp_path: Path) -> None:
    model = copy_model(hf_models.dirs["gpt2"], tmp_path)
    (model / "tokenizer.json").unlink()
    with pytest.raises(ModelStoreError, match=r"tokenizer\.json"):
        fresh_store(tmp_path).import_hf_dir(model)


def test_cannot_relabel_a_model_with_a_hand_written_manifest(hf_models: HfModels, tmp_path: Path) -> None:
    """A manifest claiming another task or context than the files say is refused at install."""
    source = hf_models.store.path(hf_models.gpt2.model_id)
    forged_dir = tmp_path / "forged"
    forged_dir.mkdir()
    manifest = parse_manifest((source / MANIFEST_FILE).read_bytes())
    assert manifest.hf is not None
    forged = manifest.model_copy(update={"hf": manifest.hf.model_copy(update={"context_length": 100_000})})
    for name in manifest.files:
        (forged_dir / name).write_bytes((source / name).read_bytes())
    (forged_dir / MANIFEST_FILE).write_bytes(forged.canonical_bytes())
    store = fresh_store(tmp_path)
    with pytest.raises(ModelStoreError, match="its manifest says"):
        store.import_dir(forged_dir)
    assert_nothing_installed(store)


def test_can_install_an_int8_variant_as_a_model_of_its_own(hf_models: HfModels) -> None:
    variant, full = hf_models.llama_int8, hf_models.llama
    assert variant.hf is not None
    assert full.hf is not None
    assert variant.model_id != full.model_id
    assert variant.files == full.files  # the same bytes, served another way
    assert (variant.hf.quantization, variant.hf.served_precision, full.hf.served_precision) == (
        "int8",
        "int8",
        "F32",
    )
    assert variant.name == "llama-int8"


def test_cannot_quantize_an_architecture_without_linear_layers(hf_models: HfModels, tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    with pytest.raises(ModelStoreError, match="GPT2LMHeadModel has no int8 variant"):
        store.import_hf_dir(hf_models.dirs["gpt2"], quantization="int8")
    assert_nothing_installed(store)
