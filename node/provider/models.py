"""`Models`: install and list models through the executor's model store."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from node.domain.service import ModelUpload, ModelView
from node.errors import ModelStoreError
from node.executor.hf_model import is_hf_dir
from node.executor.manifest import MANIFEST_FILE, ModelManifest, normalize_model_id
from node.executor.pool import ExecutorPool
from node.executor.store import ModelStore

# Called with a model id when a running provider gains the model; it is offered once this returns.
ModelAdded = Callable[[str], Awaitable[None]]
# Called with a model id when a running provider is to stop offering it; it is not offered once this
# returns.
ModelRemoved = Callable[[str], Awaitable[None]]


class Models:
    def __init__(
        self,
        store: ModelStore,
        pool: ExecutorPool | None,
        *,
        on_added: ModelAdded | None = None,
        on_removed: ModelRemoved | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self._on_added = on_added
        self._on_removed = on_removed

    async def add(self, source: bytes | Path, *, upload: ModelUpload | None = None) -> ModelView:
        manifest = await asyncio.to_thread(self._install, source, upload)
        if self._on_added is not None:
            await self._on_added(manifest.model_id)
        return self._view(manifest)

    def _install(self, source: bytes | Path, upload: ModelUpload | None) -> ModelManifest:
        if isinstance(source, Path) and (source / MANIFEST_FILE).is_file():
            return self.store.import_dir(source)
        if isinstance(source, Path) and is_hf_dir(source):
            return self.store.import_hf_dir(source)
        if upload is None:
            raise ModelStoreError(
                "a torch.export program needs its name, inputs and outputs",
                hint="pass a ModelUpload, or a directory holding manifest.json",
            )
        if isinstance(source, Path):
            if not source.is_file():
                raise ModelStoreError(f"{source} is neither a model directory nor a .pt2 file")
            return self._import_program(source, upload)
        with tempfile.TemporaryDirectory(dir=self.store.root) as tmp:
            program = Path(tmp) / "program.pt2"
            program.write_bytes(source)
            return self._import_program(program, upload)

    def _import_program(self, program: Path, upload: ModelUpload) -> ModelManifest:
        return self.store.import_exported_program(
            program,
            name=upload.name,
            inputs=upload.inputs,
            outputs=upload.outputs,
            batchable=upload.batchable,
        )

    async def remove(self, model_id: str, *, delete_files: bool = False) -> ModelView:
        key = normalize_model_id(model_id)
        view = self._view(await asyncio.to_thread(self.store.get, key))
        if self._on_removed is not None:
            await self._on_removed(key)
        if delete_files:
            await asyncio.to_thread(self.store.remove, key)
        return view

    async def list(self) -> tuple[ModelView, ...]:
        manifests = await asyncio.to_thread(self.store.models)
        return tuple(self._view(m) for m in manifests)

    def _view(self, manifest: ModelManifest) -> ModelView:
        model_id = manifest.model_id
        warm = self.pool is not None and model_id in self.pool.lanes()
        size = sum((self.store.path(model_id) / name).stat().st_size for name in manifest.files)
        return ModelView(
            model_id=model_id,
            name=manifest.name,
            format=manifest.format,
            size_bytes=size,
            batchable=manifest.batchable,
            warm=warm,
        )
