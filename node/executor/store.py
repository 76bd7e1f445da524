"""The model store: content-addressed directories on disk, bounded in size, least recently used out.

Layout: `<root>/<model id>/manifest.json` plus the files the manifest pins by sha256. Models are
staged under `<root>/.staging` and renamed into place, so a crash never leaves half a model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from node.errors import ModelStoreError
from node.executor.errors import InvalidInput, ProgramRefused, UnknownModel, UnsafeModelFile
from node.executor.files import sha256_file
from node.executor.hf_model import check_hf_files, read_hf_dir
from node.executor.manifest import (
    BUILTIN_ARCHITECTURES,
    MANIFEST_FILE,
    ModelManifest,
    Quantization,
    TensorSpec,
    normalize_model_id,
    parse_manifest,
)
from node.executor.pickle_scan import looks_like_pickle
from node.executor.program_interface import ProgramInterface, disagreements
from node.executor.wire import parse_payload
from node.logging import get_logger

log = get_logger(__name__)
PROGRAM_FILE = "program.pt2"
_STAGING = ".staging"
# What the install check's torch subprocess may use, before the archive's own share (16x its size).
_CHECK_MEMORY_BYTES = 2 * 2**30
_CHECK_TIMEOUT_S = 300


class ModelStore:
    """Models on disk under `root`, at most `capacity_bytes` in all; `pin` protects models in use."""

    def __init__(self, root: Path, capacity_bytes: int) -> None:
        self.root = root
        self.capacity_bytes = capacity_bytes
        self._pinned: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / _STAGING, ignore_errors=True)

    def get(self, model_id: str | bytes) -> ModelManifest:
        """The manifest of a stored model; marks it used for eviction order."""
        model_dir = self.path(model_id)
        manifest = parse_manifest((model_dir / MANIFEST_FILE).read_bytes())
        os.utime(model_dir)
        return manifest

    def path(self, model_id: str | bytes) -> Path:
        key = normalize_model_id(model_id)
        model_dir = self.root / key
        if not (model_dir / MANIFEST_FILE).is_file():
            raise UnknownModel(
                f"model {key} is not in the store at {self.root}",
                hint="install it first (gpunode models add / scripts/make_builtin_models.py)",
            )
        return model_dir

    def models(self) -> list[ModelManifest]:
        return [parse_manifest((d / MANIFEST_FILE).read_bytes()) for d in self._model_dirs()]

    def used_bytes(self) -> int:
        return sum(_dir_size(d) for d in self._model_dirs())

    def verify(self, model_id: str | bytes) -> ModelManifest:
        """Re-hash every file of a stored model; raises if any byte changed on disk."""
        manifest = self.get(model_id)
        model_dir = self.path(model_id)
        for name, digest in manifest.files.items():
            if sha256_file(model_dir / name) != digest:
                raise ModelStoreError(
                    f"model {manifest.name}: {name} does not match its sha256",
                    hint="remove the model and install it again",
                )
        return manifest

    def pin(self, model_id: str) -> None:
        self._pinned[model_id] = self._pinned.get(model_id, 0) + 1

    def unpin(self, model_id: str) -> None:
        left = self._pinned.get(model_id, 0) - 1
        if left > 0:
            self._pinned[model_id] = left
        else:
            self._pinned.pop(model_id, None)

    def remove(self, model_id: str | bytes) -> None:
        shutil.rmtree(self.path(model_id))

    def install(self, manifest: ModelManifest, files: Mapping[str, Path]) -> ModelManifest:
        """Check and copy a model's files in; returns the manifest (its `model_id` is the key)."""
        if set(files) != set(manifest.files):
            raise ModelStoreError(
                f"model {manifest.name}: files {sorted(files)} do not match the "
                f"manifest's {sorted(manifest.files)}"
            )
        for name, path in files.items():
            if sha256_file(path) != manifest.files[name]:
                raise ModelStoreError(
                    f"model {manifest.name}: {name} does not match the sha256 in its manifest"
                )
        _check_format(manifest, files)
        model_id = manifest.model_id
        if (self.root / model_id / MANIFEST_FILE).is_file():
            return manifest
        self._make_room(sum(path.stat().st_size for path in files.values()))
        self._stage_and_commit(manifest, files)
        log.info("model_installed", model=manifest.name, model_id=model_id, format=manifest.format)
        return manifest

    def import_dir(self, source: Path) -> ModelManifest:
        """Install a model from a directory holding `manifest.json` and its files."""
        manifest = parse_manifest((source / MANIFEST_FILE).read_bytes())
        return self.install(manifest, {name: source / name for name in manifest.files})

    def import_hf_dir(
        self, source: Path, *, name: str | None = None, quantization: Quantization | None = None
    ) -> ModelManifest:
        """Install a Hugging Face model directory (`hf_model` says what is refused and why), or
        its int8 variant (`quantization="int8"`), a model of its own id."""
        manifest, files = read_hf_dir(source, name=name, quantization=quantization)
        return self.install(manifest, files)

    def import_exported_program(
        self,
        program: Path,
        *,
        name: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[str, ...],
        batchable: bool = False,
    ) -> ModelManifest:
        """Install a user model saved with `torch.export.save`; pickles, unsafe archives and programs
        that break `program_rules` (state mutation, uninitialized memory, undeclared outputs) are refused.

        Inputs and outputs left empty are read from the program; declared ones must agree with it."""
        if not inputs or not outputs:
            found = _check_program(program, None, size=program.stat().st_size)
            inputs = inputs or found.inputs
            outputs = outputs or found.outputs
        manifest = ModelManifest(
            name=name,
            format="torch_export",
            files={PROGRAM_FILE: sha256_file(program)},
            inputs=inputs,
            outputs=outputs,
            batchable=batchable,
        )
        return self.install(manifest, {PROGRAM_FILE: program})

    def install_builtin(
        self, architecture: str, *, name: str | None = None, **overrides: int
    ) -> ModelManifest:
        """Generate a built-in model's deterministic weights (in a torch subprocess) and install it."""
        if architecture not in BUILTIN_ARCHITECTURES:
            raise ModelStoreError(
                f"unknown built-in architecture {architecture!r}",
                hint=f"choose one of {', '.join(BUILTIN_ARCHITECTURES)}",
            )
        with tempfile.TemporaryDirectory(dir=self.root) as out:
            argv = [sys.executable, "-m", "node.executor.builtin_models", architecture, "--out", out]
            argv += ["--name", name] if name else []
            argv += [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ModelStoreError(
                    f"generating built-in model {architecture} failed: {done.stderr[-2000:]}"
                )
            return self.import_dir(Path(out))

    def _stage_and_commit(self, manifest: ModelManifest, files: Mapping[str, Path]) -> None:
        staging = self.root / _STAGING
        staging.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=staging))
        try:
            for name, path in files.items():
                shutil.copyfile(path, tmp / name)
            (tmp / MANIFEST_FILE).write_bytes(manifest.canonical_bytes())
            # The sandbox uid reads models through a read-only bind: world-readable, owner-writable.
            for entry in (tmp, *tmp.iterdir()):
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            os.rename(tmp, self.root / manifest.model_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _make_room(self, size: int) -> None:
        if size > self.capacity_bytes:
            raise ModelStoreError(
                f"model of {size} bytes is larger than the whole cache ({self.capacity_bytes})",
                hint="raise executor.model_cache_bytes",
            )
        used = self.used_bytes()
        for model_dir in sorted(self._model_dirs(), key=lambda d: d.stat().st_mtime):
            if used + size <= self.capacity_bytes:
                return
            if model_dir.name in self._pinned:
                continue
            freed = _dir_size(model_dir)
            shutil.rmtree(model_dir)
            used -= freed
            log.info("model_evicted", model_id=model_dir.name, freed_bytes=freed)
        if used + size > self.capacity_bytes:
            raise ModelStoreError(
                "model cache is full of models in use", hint="raise executor.model_cache_bytes"
            )

    def _model_dirs(self) -> list[Path]:
        return [d for d in self.root.iterdir() if d.is_dir() and (d / MANIFEST_FILE).is_file()]


def _check_format(manifest: ModelManifest, files: Mapping[str, Path]) -> None:
    if manifest.format == "torch_export":
        if set(files) != {PROGRAM_FILE}:
            raise ModelStoreError(f"a torch_export model has exactly one file, {PROGRAM_FILE}")
        _check_program(files[PROGRAM_FILE], manifest, size=files[PROGRAM_FILE].stat().st_size)
        return
    if manifest.format == "huggingface":
        check_hf_files(manifest, files)
        return
    if manifest.architecture not in BUILTIN_ARCHITECTURES:
        raise ModelStoreError(
            f"unknown built-in architecture {manifest.architecture!r}",
            hint=f"choose one of {', '.join(BUILTIN_ARCHITECTURES)}",
        )
    for name, path in files.items():
        data = path.read_bytes()
        try:
            parse_payload(data, max_bytes=len(data))
        except InvalidInput as exc:
            if looks_like_pickle(data) or data.startswith(b"PK"):
                raise UnsafeModelFile(
                    f"{name} is a pickle or torch.save checkpoint, not safetensors",
                    hint="save weights with safetensors.torch.save_file",
                ) from exc
            raise ModelStoreError(f"{name} is not a valid safetensors file: {exc.message}") from exc


def _check_program(program: Path, manifest: ModelManifest | None, *, size: int) -> ProgramInterface:
    """The pickle scan, then the worker's own check (`program_rules` and the ATen schemas: only torch
    knows which operators write to an argument), in a torch subprocess: nothing from the file is
    run, the node never imports torch, and the archive is unpacked and its JSON parsed there alone,
    under a memory and a time limit: a few MB can unpack to JSON that takes gigabytes as objects."""
    memory = _CHECK_MEMORY_BYTES + 16 * size
    # The child limits its own memory before it loads anything: a `preexec_fn` would run between
    # fork and exec in a node that has threads (p2p, mDNS, gRPC), which can crash the child.
    bootstrap = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory})); "
        "sys.argv[0] = 'program_loader'; "
        "runpy.run_module('node.executor.program_loader', run_name='__main__')"
    )
    argv = [sys.executable, "-c", bootstrap, str(program)]
    if manifest is not None:
        argv += ["--inputs", str(len(manifest.inputs)), "--outputs", str(len(manifest.outputs))]
    name = manifest.name if manifest is not None else program.name
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelStoreError(f"checking program {name} took over {_CHECK_TIMEOUT_S} s") from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        if done.returncode == 0:
            found = answer["interface"]
            interface = ProgramInterface(
                inputs=tuple(TensorSpec.model_validate(spec) for spec in found["inputs"]),
                outputs=tuple(found["outputs"]),
                batchable=bool(found["batchable"]),
            )
        else:
            error = UnsafeModelFile if answer["error"] == "UnsafeModelFile" else ProgramRefused
    except (ValueError, IndexError, KeyError, TypeError):
        raise ModelStoreError(
            f"checking program {name} failed (exit status {done.returncode}): {done.stderr[-2000:]}"
        ) from None
    if done.returncode != 0:
        raise error(answer["message"], hint=answer["hint"])
    problems = disagreements(manifest.inputs, interface) if manifest is not None else []
    if problems:
        raise ProgramRefused(
            f"model {name} declares inputs its program does not take: {'; '.join(problems)}",
            hint="leave the inputs out: `gpunode models add` reads them from the program",
        )
    return interface


def _dir_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())
