"""The model store: content addressing, integrity, size bound with LRU eviction, refusing unsafe files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from executor_support import exported_program, malicious_pickle, poisoned_program

from node.errors import ModelStoreError
from node.executor.builtin_models import write_builtin
from node.executor.errors import InvalidInput, ProgramRefused, UnknownModel, UnsafeModelFile
from node.executor.manifest import (
    MANIFEST_FILE,
    ModelManifest,
    TensorSpec,
    normalize_model_id,
    parse_manifest,
)
from node.executor.store import ModelStore


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    write_builtin("mlp", out / "mlp")
    write_builtin("mlp", out / "mlp-wide", name="mlp-wide", hidden=512)
    write_builtin("causal_lm", out / "lm")
    exported_program(out / "small.pt2")
    return out


def test_can_generate_identical_builtin_weights_twice(generated: Path, tmp_path: Path) -> None:
    again = write_builtin("mlp", tmp_path / "again")
    first = parse_manifest((generated / "mlp" / MANIFEST_FILE).read_bytes())
    assert again.model_id == first.model_id
    assert (tmp_path / "again" / "weights.safetensors").read_bytes() == (
        generated / "mlp" / "weights.safetensors"
    ).read_bytes()


def test_can_install_and_verify_a_model(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    manifest = store.import_dir(generated / "mlp")
    assert store.get(manifest.model_id) == manifest
    assert store.get(bytes.fromhex(manifest.model_id)) == manifest
    assert store.verify("0x" + manifest.model_id.upper()) == manifest
    assert [m.model_id for m in store.models()] == [manifest.model_id]
    assert store.import_dir(generated / "mlp") == manifest  # idempotent


def test_cannot_use_a_model_whose_file_changed_on_disk(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    manifest = store.import_dir(generated / "mlp")
    weights = store.path(manifest.model_id) / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="does not match its sha256"):
        store.verify(manifest.model_id)


def test_cannot_install_files_that_do_not_match_the_manifest(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    manifest = parse_manifest((generated / "mlp" / MANIFEST_FILE).read_bytes())
    other = generated / "mlp-wide" / "weights.safetensors"
    with pytest.raises(ModelStoreError, match="does not match the sha256"):
        store.install(manifest, {"weights.safetensors": other})
    with pytest.raises(ModelStoreError, match="do not match the manifest"):
        store.install(manifest, {})
    assert store.models() == []


def test_cannot_look_up_unknown_or_malformed_ids(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(UnknownModel, match="not in the store"):
        store.get("ab" * 32)
    with pytest.raises(InvalidInput, match="not a sha256"):
        normalize_model_id("../../etc/passwd")


def test_cannot_parse_manifests_with_unsafe_file_names() -> None:
    bad = {
        "name": "x",
        "format": "builtin",
        "architecture": "mlp",
        "files": {"../escape": "a" * 64},
        "inputs": [{"name": "input", "dtype": "F32", "shape": [None, 4]}],
        "outputs": ["output"],
    }
    with pytest.raises(ModelStoreError, match="plain name"):
        parse_manifest(json.dumps(bad).encode())
    with pytest.raises(ModelStoreError, match="invalid"):
        parse_manifest(b"not json")


def test_can_evict_least_recently_used_models_but_not_pinned_ones(generated: Path, tmp_path: Path) -> None:
    sizes = {
        name: (generated / name / "weights.safetensors").stat().st_size for name in ("mlp", "mlp-wide", "lm")
    }
    store = ModelStore(tmp_path / "store", capacity_bytes=sizes["mlp"] + sizes["mlp-wide"] + 4096)
    mlp = store.import_dir(generated / "mlp")
    time.sleep(0.01)
    wide = store.import_dir(generated / "mlp-wide")
    time.sleep(0.01)
    store.get(mlp.model_id)  # mlp is now the most recently used
    store.pin(mlp.model_id)
    lm = store.import_dir(generated / "lm")
    ids = {m.model_id for m in store.models()}
    assert wide.model_id not in ids
    assert {mlp.model_id, lm.model_id} <= ids
    assert store.used_bytes() <= store.capacity_bytes


def test_cannot_install_a_model_larger_than_the_cache(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=1024)
    with pytest.raises(ModelStoreError, match="larger than the whole cache"):
        store.import_dir(generated / "mlp")
    assert store.models() == []


def test_can_import_an_exported_program(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    spec = (TensorSpec(name="x", dtype="F32", shape=(None, 4)),)
    manifest = store.import_exported_program(
        generated / "small.pt2", name="small", inputs=spec, outputs=("y",)
    )
    assert manifest.format == "torch_export"
    assert store.verify(manifest.model_id) == manifest


@pytest.mark.parametrize("kind", ["raw pickle", "torch.save checkpoint", "poisoned pt2", "not a zip"])
def test_cannot_import_files_that_run_code(generated: Path, tmp_path: Path, kind: str) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    path = tmp_path / "model.pt2"
    if kind == "raw pickle":
        path.write_bytes(malicious_pickle())
    elif kind == "torch.save checkpoint":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("archive/data.pkl", malicious_pickle())
        path.write_bytes(buffer.getvalue())
    elif kind == "poisoned pt2":
        poisoned_program(generated / "small.pt2", path)
    else:
        path.write_bytes(b"\x00ELF not a model")
    spec = (TensorSpec(name="x", dtype="F32", shape=(None, 4)),)
    with pytest.raises(UnsafeModelFile, match=r"run (arbitrary )?code|not a torch.export|not a zip"):
        store.import_exported_program(path, name="evil", inputs=spec, outputs=("y",))
    assert store.models() == []
    assert not os.path.exists("/tmp/pwned")


def test_cannot_ship_pickled_weights_as_a_builtin(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(malicious_pickle())
    good = parse_manifest((generated / "mlp" / MANIFEST_FILE).read_bytes())
    evil = ModelManifest.model_validate(
        {
            **good.model_dump(),
            "files": {"weights.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()},
        }
    )
    with pytest.raises(UnsafeModelFile, match="pickle"):
        store.install(evil, {"weights.safetensors": weights})
    assert store.models() == []


def test_a_programs_inputs_and_outputs_are_read_from_it(generated: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    manifest = store.import_exported_program(generated / "small.pt2", name="small", inputs=(), outputs=())
    assert manifest.inputs == (TensorSpec(name="x", dtype="F32", shape=(None, 4)),)
    assert manifest.outputs == ("output",)


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        (TensorSpec(name="x", dtype="F64", shape=(None, 4)), "is F32 in the program, not F64"),
        (TensorSpec(name="x", dtype="F32", shape=(None, 5)), r"has shape \[\*, 4\] in the program"),
        (TensorSpec(name="x", dtype="F32", shape=(4,)), r"has shape \[\*, 4\] in the program, not \[4\]"),
    ],
)
def test_cannot_declare_inputs_the_program_does_not_take(
    generated: Path, tmp_path: Path, declared: TensorSpec, why: str
) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    program = generated / "small.pt2"
    with pytest.raises(ProgramRefused, match=why):
        store.import_exported_program(program, name="small", inputs=(declared,), outputs=("y",))
    assert store.models() == []
    # A fixed batch size where the program allows any is the owner's choice, and so is a name.
    narrowed = TensorSpec(name="features", dtype="F32", shape=(8, 4))
    store.import_exported_program(program, name="small", inputs=(narrowed,), outputs=("y",))
