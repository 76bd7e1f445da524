"""Where a node keeps the blobs it serves: content-addressed by sha256, with chunk manifests."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from node.errors import P2PError
from node.types import Hash32, sha256

# 1 MiB chunks: large enough that per-frame overhead vanishes against yamux's ~70 MB/s, small
# enough that a tampered chunk is caught after at most 1 MiB of wasted transfer.
CHUNK_SIZE = 1 << 20
# Blobs whose source `BlobSources` remembers (transfers in flight are far fewer).
_SERVING_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    chunk_size: int
    chunk_sha256: tuple[Hash32, ...]


def manifest_of(data: bytes | memoryview, chunk_size: int = CHUNK_SIZE) -> Manifest:
    view = memoryview(data)
    hashes = tuple(sha256(bytes(view[i : i + chunk_size])) for i in range(0, len(view), chunk_size))
    return Manifest(len(view), chunk_size, hashes)


def manifest_of_file(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[Manifest, Hash32]:
    """The chunk manifest of a file and its whole sha256, read once."""
    whole = hashlib.sha256()
    hashes: list[Hash32] = []
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            whole.update(chunk)
            hashes.append(sha256(chunk))
            size += len(chunk)
    return Manifest(size, chunk_size, tuple(hashes)), Hash32(whole.digest())


def read_file_range(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


class BlobSource(Protocol):
    """What the blob server reads from; calls may block briefly (they run in a worker thread).
    `manifest` is None when the source does not hold the blob or does not give it to `peer`."""

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None: ...

    def read(self, digest: Hash32, offset: int, length: int) -> bytes: ...


class MemoryBlobStore:
    """Blobs held in memory: inputs and outputs in flight."""

    def __init__(self) -> None:
        self._blobs: dict[Hash32, tuple[bytes, Manifest]] = {}

    def put(self, data: bytes) -> Hash32:
        digest = sha256(data)
        self._blobs[digest] = (data, manifest_of(data))
        return digest

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
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

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
        with self._lock:
            cached = self._manifests.get(digest)
        if cached is not None:
            return cached
        path = self.path_of(digest)
        if not path.is_file():
            return None
        manifest, whole = manifest_of_file(path)
        if whole != digest:
            raise P2PError(
                f"blob file {path} does not hash to its name", hint="the file is corrupt; delete it"
            )
        with self._lock:
            self._manifests[digest] = manifest
        return manifest

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        return read_file_range(self.path_of(digest), offset, length)


class SharedBlobs:
    """Blobs held in memory for the peers they are shared with, for `ttl_s` at most: a job's large
    input (shared with its provider) or output (shared with its client, which fetches it as soon
    as the result arrives; one asking again later gets it shared anew). Nobody else gets them."""

    def __init__(self, ttl_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._blobs: dict[Hash32, tuple[bytes, Manifest]] = {}
        # (blob, peer) → when the share ends.
        self._shares: dict[tuple[Hash32, str], float] = {}
        self._lock = threading.Lock()

    def share(self, data: bytes, peer: str) -> Hash32:
        digest = sha256(data)
        with self._lock:
            self._expire()
            if digest not in self._blobs:
                self._blobs[digest] = (data, manifest_of(data))
            self._shares[(digest, peer)] = self._clock() + self.ttl_s
        return digest

    def unshare(self, digest: Hash32, peer: str) -> None:
        with self._lock:
            self._shares.pop((digest, peer), None)
            self._drop_unshared(digest)

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
        with self._lock:
            self._expire()
            entry = self._blobs.get(digest)
            return entry[1] if entry is not None and (digest, peer) in self._shares else None

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        with self._lock:
            entry = self._blobs.get(digest)
        return b"" if entry is None else entry[0][offset : offset + length]

    def __len__(self) -> int:
        with self._lock:
            return len(self._blobs)

    def _expire(self) -> None:
        now = self._clock()
        for key in [key for key, until in self._shares.items() if until <= now]:
            del self._shares[key]
            self._drop_unshared(key[0])

    def _drop_unshared(self, digest: Hash32) -> None:
        if not any(blob == digest for blob, _ in self._shares):
            self._blobs.pop(digest, None)


class BlobSources:
    """Several sources served as one: a blob comes from the first that gives it to the peer."""

    def __init__(self, *sources: BlobSource) -> None:
        self._sources = sources
        # Which source answered for a blob, so its chunks are read from the same one.
        self._serving: dict[Hash32, BlobSource] = {}
        self._lock = threading.Lock()

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
        for source in self._sources:
            found = source.manifest(digest, peer)
            if found is not None:
                with self._lock:
                    self._serving.pop(digest, None)
                    self._serving[digest] = source
                    while len(self._serving) > _SERVING_KEPT:
                        del self._serving[next(iter(self._serving))]
                return found
        return None

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        with self._lock:
            source = self._serving.get(digest)
        return b"" if source is None else source.read(digest, offset, length)
