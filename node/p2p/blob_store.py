"""Where a node keeps the blobs it serves: content-addressed by sha256, with chunk manifests."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from node.errors import P2PError
from node.types import Hash32, sha256

# 1 MiB chunks: large enough that per-frame overhead vanishes against yamux's ~70 MB/s, small
# enough that a tampered chunk is caught after at most 1 MiB of wasted transfer.
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    chunk_size: int
    chunk_sha256: tuple[Hash32, ...]


def manifest_of(data: bytes | memoryview, chunk_size: int = CHUNK_SIZE) -> Manifest:
    view = memoryview(data)
    hashes = tuple(sha256(bytes(view[i : i + chunk_size])) for i in range(0, len(view), chunk_size))
    return Manifest(len(view), chunk_size, hashes)


class BlobSource(Protocol):
    """What the blob server reads from; calls may block briefly (they run in a worker thread)."""

    def manifest(self, digest: Hash32) -> Manifest | None: ...

    def read(self, digest: Hash32, offset: int, length: int) -> bytes: ...


class BlobSources:
    """Several sources served as one: a blob comes from the first that holds it."""

    def __init__(self, *sources: BlobSource) -> None:
        self.sources = sources

    def manifest(self, digest: Hash32) -> Manifest | None:
        for source in self.sources:
            found = source.manifest(digest)
            if found is not None:
                return found
        return None

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        for source in self.sources:
            if source.manifest(digest) is not None:
                return source.read(digest, offset, length)
        return b""


class MemoryBlobStore:
    """Blobs held in memory: inputs and outputs in flight."""

    def __init__(self) -> None:
        self._blobs: dict[Hash32, tuple[bytes, Manifest]] = {}

    def put(self, data: bytes) -> Hash32:
        digest = sha256(data)
        self._blobs[digest] = (data, manifest_of(data))
        return digest

    def manifest(self, digest: Hash32) -> Manifest | None:
        entry = self._blobs.get(digest)
        return entry[1] if entry else None

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        return self._blobs[digest][0][offset : offset + length]


class FileBlobStore:
    """Blobs as files named by their hex sha256 in one directory (models, large inputs)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._manifests: dict[Hash32, Manifest] = {}
        self._lock = threading.Lock()

    def path_of(self, digest: Hash32) -> Path:
        return self.directory / digest.hex()

    def put(self, data: bytes) -> Hash32:
        digest = sha256(data)
        target = self.path_of(digest)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return digest

    def manifest(self, digest: Hash32) -> Manifest | None:
        with self._lock:
            cached = self._manifests.get(digest)
        if cached is not None:
            return cached
        path = self.path_of(digest)
        if not path.is_file():
            return None
        manifest, whole = self._scan(path)
        if whole != digest:
            raise P2PError(
                f"blob file {path} does not hash to its name", hint="the file is corrupt; delete it"
            )
        with self._lock:
            self._manifests[digest] = manifest
        return manifest

    def _scan(self, path: Path) -> tuple[Manifest, Hash32]:
        whole = hashlib.sha256()
        hashes: list[Hash32] = []
        size = 0
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                whole.update(chunk)
                hashes.append(sha256(chunk))
                size += len(chunk)
        return Manifest(size, CHUNK_SIZE, tuple(hashes)), Hash32(whole.digest())

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        with self.path_of(digest).open("rb") as f:
            f.seek(offset)
            return f.read(length)
