"""`/gpunode/blob/1` between real hosts: integrity across sizes, tampering and truncation caught."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from node.errors import ProtocolViolation
from node.gen.gpunode.v1 import blob_pb2
from node.p2p.blob_protocol import BLOB_PROTOCOL, MAX_FRAME, fetch_blob, fetch_blob_to_file, serve_blobs
from node.p2p.blob_store import (
    CHUNK_SIZE,
    BlobSources,
    FileBlobStore,
    MemoryBlobStore,
    SharedBlobs,
    manifest_of,
)
from node.p2p.errors import BlobIntegrityError, BlobNotFound
from node.p2p.stream import FramedStream
from node.types import sha256

if TYPE_CHECKING:
    from conftest import HostsFactory

SIZES = {
    "empty": 0,
    "one_byte": 1,
    "one_chunk": CHUNK_SIZE,
    "chunk_and_a_bit": CHUNK_SIZE + 1,
    "many_chunks": 7 * CHUNK_SIZE + 12345,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_can_fetch_blob_of_any_size(running_hosts: HostsFactory, size: int) -> None:
    data = os.urandom(size)
    store = MemoryBlobStore()
    digest = store.put(data)
    async with running_hosts(2) as (server, client):
        serve_blobs(server, store)
        await client.connect(server.addrs[0])
        assert await fetch_blob(client, server.peer_id, digest, max_size=size + 1) == data


@pytest.mark.slow
async def test_can_fetch_50_mb_blob_from_files(running_hosts: HostsFactory, tmp_path: Path) -> None:
    data = os.urandom(50 * 10**6)
    store = FileBlobStore(tmp_path)
    digest = store.put(data)
    async with running_hosts(2) as (server, client):
        serve_blobs(server, store)
        await client.connect(server.addrs[0])
        assert await fetch_blob(client, server.peer_id, digest, max_size=len(data)) == data


async def test_missing_blob_is_reported(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (server, client):
        serve_blobs(server, MemoryBlobStore())
        await client.connect(server.addrs[0])
        with pytest.raises(BlobNotFound, match="does not hold"):
            await fetch_blob(client, server.peer_id, sha256(b"nothing"), max_size=10)


async def test_cannot_fetch_blob_over_the_size_limit(running_hosts: HostsFactory) -> None:
    store = MemoryBlobStore()
    digest = store.put(b"x" * 1000)
    async with running_hosts(2) as (server, client):
        serve_blobs(server, store)
        await client.connect(server.addrs[0])
        with pytest.raises(ProtocolViolation, match="over the 999-byte limit"):
            await fetch_blob(client, server.peer_id, digest, max_size=999)


def _lying_server(data: bytes, *, corrupt_chunk: int | None = None, drop_after: int | None = None):  # type: ignore[no-untyped-def]
    """A blob server that promises the true manifest, then sends a bad or short stream."""
    manifest = manifest_of(data)

    async def on_stream(stream: FramedStream) -> None:
        await stream.read_frame(5.0)
        msg = blob_pb2.BlobManifest(
            found=True,
            size=manifest.size,
            chunk_size=manifest.chunk_size,
            chunk_sha256=list(manifest.chunk_sha256),
        )
        await stream.write_frames([msg.SerializeToString()], 5.0)
        for index in range(len(manifest.chunk_sha256)):
            if drop_after is not None and index >= drop_after:
                return
            chunk = data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
            if index == corrupt_chunk:
                chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
            await stream.write_frames([chunk], 5.0)

    return on_stream


async def test_tampered_chunk_is_rejected(running_hosts: HostsFactory) -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    async with running_hosts(2) as (server, client):
        server.set_trio_stream_handler(
            BLOB_PROTOCOL, _lying_server(data, corrupt_chunk=1), max_frame=MAX_FRAME
        )
        await client.connect(server.addrs[0])
        with pytest.raises(BlobIntegrityError, match=r"chunk 1 .* does not match"):
            await fetch_blob(client, server.peer_id, sha256(data), max_size=len(data))


async def test_truncated_blob_is_rejected(running_hosts: HostsFactory) -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    async with running_hosts(2) as (server, client):
        server.set_trio_stream_handler(BLOB_PROTOCOL, _lying_server(data, drop_after=2), max_frame=MAX_FRAME)
        await client.connect(server.addrs[0])
        with pytest.raises(BlobIntegrityError, match="truncated"):
            await fetch_blob(client, server.peer_id, sha256(data), max_size=len(data))


async def test_manifest_for_another_blob_is_rejected(running_hosts: HostsFactory) -> None:
    real, other = os.urandom(1000), os.urandom(1000)
    async with running_hosts(2) as (server, client):
        server.set_trio_stream_handler(BLOB_PROTOCOL, _lying_server(other), max_frame=MAX_FRAME)
        await client.connect(server.addrs[0])
        with pytest.raises(BlobIntegrityError, match="different sha256"):
            await fetch_blob(client, server.peer_id, sha256(real), max_size=2000)


async def test_cannot_fetch_a_job_blob_shared_with_another_peer(running_hosts: HostsFactory) -> None:
    """A job's large input or output is shared with the one peer of the job: another peer that
    learns its hash (an on-chain receipt publishes output hashes) gets nothing."""
    shared = SharedBlobs()
    async with running_hosts(3) as (owner, provider, stranger):
        data = os.urandom(CHUNK_SIZE + 7)
        digest = shared.share(data, provider.peer_id)
        serve_blobs(owner, BlobSources(MemoryBlobStore(), shared))
        for host in (provider, stranger):
            await host.connect(owner.addrs[0])
        with pytest.raises(BlobNotFound):
            await fetch_blob(stranger, owner.peer_id, digest, max_size=len(data))
        assert await fetch_blob(provider, owner.peer_id, digest, max_size=len(data)) == data
        shared.unshare(digest, provider.peer_id)
        assert len(shared) == 0  # nobody left to give it to: dropped from memory
        with pytest.raises(BlobNotFound):
            await fetch_blob(provider, owner.peer_id, digest, max_size=len(data))


def test_cannot_fetch_a_shared_blob_after_its_share_expires() -> None:
    now = [0.0]
    shared = SharedBlobs(ttl_s=10.0, clock=lambda: now[0])
    digest = shared.share(b"an output nobody came for", "peer-a")
    assert shared.manifest(digest, "peer-a") is not None
    now[0] = 11.0
    assert shared.manifest(digest, "peer-a") is None
    assert len(shared) == 0


async def test_can_fetch_a_blob_into_a_file_and_leave_nothing_when_it_is_tampered(
    running_hosts: HostsFactory, tmp_path: Path
) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    store = MemoryBlobStore()
    digest = store.put(data)
    async with running_hosts(2) as (server, client):
        serve_blobs(server, store)
        await client.connect(server.addrs[0])
        target = tmp_path / "blob"
        assert await fetch_blob_to_file(client, server.peer_id, digest, target, max_size=len(data)) == len(
            data
        )
        assert target.read_bytes() == data
        # The server now serves other bytes under the same name: the fetch fails, no file stays.
        store._blobs[digest] = (b"x" + data[1:], manifest_of(data))
        tampered = tmp_path / "tampered"
        with pytest.raises(BlobIntegrityError):
            await fetch_blob_to_file(client, server.peer_id, digest, tampered, max_size=len(data))
        assert not tampered.exists()
