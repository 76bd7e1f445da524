"""A provider's model manifests, served over `/gpunode/blob/1` under their model ids.

A model id is the sha256 of the model's canonical manifest, so a client fetching one by id checks
it is the very manifest the id names; it then checks a job's input against the model's inputs
before paying for the job.
"""

from __future__ import annotations

from node.executor.store import ModelStore
from node.p2p.blob_store import Manifest, manifest_of
from node.types import Hash32


class ModelManifests:
    """The `BlobSource` of the manifests of the models in a provider's store."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store

    def _bytes(self, digest: Hash32) -> bytes | None:
        try:
            manifest = self._store.get(digest.hex())
        except Exception:
            return None
        data = manifest.canonical_bytes()
        return data if manifest.model_id == digest.hex() else None

    def manifest(self, digest: Hash32) -> Manifest | None:
        data = self._bytes(digest)
        return None if data is None else manifest_of(data)

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        data = self._bytes(digest) or b""
        return data[offset : offset + length]
