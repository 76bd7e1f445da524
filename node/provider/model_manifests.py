"""A node's models, served over `/gpunode/blob/1`: each manifest under its model id, each file
under its sha256.

A model id is the sha256 of the model's canonical manifest, and the manifest pins each file's
sha256, so a peer fetching a model by id checks every byte it gets against the id: a client checks
a job's input against the model's inputs before paying for the job, and a provider that does not
hold a model a job names fetches it, from the client or any peer that has it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from node.errors import GpunodeError
from node.executor.store import ModelStore
from node.p2p.blob_store import Manifest, manifest_of, manifest_of_file, read_file_range
from node.types import Hash32


class ModelManifests:
    """The `BlobSource` of the manifests and files of the models in a node's store."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store
        # File sha256 → where it lies, and its chunk manifest once computed.
        self._files: dict[Hash32, Path] = {}
        self._chunks: dict[Hash32, Manifest] = {}
        self._lock = threading.Lock()

    def _bytes(self, digest: Hash32) -> bytes | None:
        try:
            manifest = self._store.get(digest.hex())
        except (GpunodeError, OSError):  # not held, or removed while being read
            return None
        data = manifest.canonical_bytes()
        return data if manifest.model_id == digest.hex() else None

    def _file(self, digest: Hash32) -> Path | None:
        with self._lock:
            known = self._files.get(digest)
        if known is not None and known.is_file():
            return known
        wanted = digest.hex()
        for model in self._store.models():
            for name, file_digest in model.files.items():
                if file_digest == wanted:
                    path = self._store.root / model.model_id / name
                    with self._lock:
                        self._files[digest] = path
                    return path
        return None

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
        data = self._bytes(digest)
        if data is not None:
            return manifest_of(data)
        path = self._file(digest)
        if path is None:
            return None
        with self._lock:
            cached = self._chunks.get(digest)
        if cached is None:
            cached, whole = manifest_of_file(path)
            if whole != digest:
                return None  # changed on disk since it was installed: not served as that blob
            with self._lock:
                self._chunks[digest] = cached
        return cached

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        data = self._bytes(digest)
        if data is not None:
            return data[offset : offset + length]
        path = self._file(digest)
        return b"" if path is None else read_file_range(path, offset, length)
