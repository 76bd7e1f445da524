"""The evidence of this node's disputes, served to their jurors over `/gpunode/blob/1`.

Only the input and the claimed output of a dispute this node opened are served (from its job
store, by sha256): a node never serves its other jobs' data to whoever asks.
"""

from __future__ import annotations

import threading

from node.jobstore.blobs import JobBlobs
from node.p2p.blob_store import Manifest, manifest_of
from node.types import Hash32


class DisputeEvidence:
    """A `BlobSource` of the blobs named by this node's open disputes."""

    def __init__(self, blobs: JobBlobs) -> None:
        self.blobs = blobs
        self._allowed: set[Hash32] = set()
        # Read from the blob server's worker thread, written on the event loop.
        self._lock = threading.Lock()

    def allow(self, *digests: Hash32) -> None:
        with self._lock:
            self._allowed.update(Hash32(bytes(d)) for d in digests)

    def _bytes(self, digest: Hash32) -> bytes | None:
        with self._lock:
            if bytes(digest) not in self._allowed:
                return None
        return self.blobs.read(digest)

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
        data = self._bytes(digest)
        return None if data is None else manifest_of(data)

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        data = self._bytes(digest) or b""
        return data[offset : offset + length]
