"""`/gpunode/blob/1`: content-addressed chunked transfer, verified chunk by chunk.

The whole transfer runs in the p2p thread (one bridge crossing per blob, not per chunk), which
is what lets it keep up with yamux on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import trio
from google.protobuf.message import DecodeError

from node.errors import ProtocolViolation
from node.gen.gpunode.v1 import blob_pb2
from node.logging import get_logger
from node.p2p.blob_store import BlobSource, Manifest
from node.p2p.errors import BlobIntegrityError, BlobNotFound, BlobTooLarge
from node.p2p.host import P2PHost
from node.p2p.stream import FramedStream
from node.types import Hash32

log = get_logger(__name__)

# Takes each chunk once it checked out against the manifest (the whole is checked at the end).
Sink = Callable[[bytes], object]

BLOB_PROTOCOL = "/gpunode/blob/1"
# Largest chunk a client accepts; the frame limit must hold a chunk plus its prefix.
MAX_CHUNK = 4 << 20
# The manifest of a 64 GiB blob in 1 MiB chunks is ~2.2 MB; frames this size cover it.
MAX_FRAME = 8 << 20


def serve_blobs(host: P2PHost, source: BlobSource) -> None:
    """Serve every blob `source` holds to any peer that asks for it by sha256."""

    async def on_stream(stream: FramedStream) -> None:
        raw = await stream.read_frame(host.read_timeout_s)
        if raw is None:
            return
        request = blob_pb2.BlobRequest()
        try:
            request.ParseFromString(raw)
        except DecodeError as exc:
            raise ProtocolViolation(f"malformed blob request: {exc}") from exc
        digest = Hash32(bytes(request.sha256))
        manifest = await trio.to_thread.run_sync(source.manifest, digest, stream.remote_peer)
        if manifest is None:
            await stream.write_frames(
                [blob_pb2.BlobManifest(found=False).SerializeToString()], host.read_timeout_s
            )
            return
        await stream.write_frames([_encode_manifest(manifest)], host.read_timeout_s)
        for index in range(len(manifest.chunk_sha256)):
            offset = index * manifest.chunk_size
            chunk = await trio.to_thread.run_sync(source.read, digest, offset, manifest.chunk_size)
            await stream.write_frames([chunk], host.read_timeout_s)

    host.set_trio_stream_handler(BLOB_PROTOCOL, on_stream, max_frame=MAX_FRAME)


def _encode_manifest(manifest: Manifest) -> bytes:
    msg = blob_pb2.BlobManifest(
        found=True,
        size=manifest.size,
        chunk_size=manifest.chunk_size,
        chunk_sha256=list(manifest.chunk_sha256),
    )
    return bytes(msg.SerializeToString())


async def fetch_blob(host: P2PHost, peer: str, digest: Hash32, *, max_size: int) -> bytes:
    """Download the blob with sha256 `digest` from `peer`, checking every chunk and the whole.

    `BlobNotFound` when the peer lacks it, `BlobIntegrityError` when anything does not hash
    right, `ProtocolViolation` for a malformed or oversize answer, `PeerTimeout` for silence.
    """
    out = bytearray()
    await _fetch_into(host, peer, digest, max_size, out.extend)
    return bytes(out)


async def fetch_blob_to_file(host: P2PHost, peer: str, digest: Hash32, path: Path, *, max_size: int) -> int:
    """`fetch_blob`, written to `path` chunk by chunk as they arrive and check out (a model file
    need not fit in memory); returns its size. Nothing is left at `path` when the fetch fails."""
    f = await asyncio.to_thread(path.open, "wb")
    try:
        with f:
            await _fetch_into(host, peer, digest, max_size, f.write)
            return f.tell()
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise


async def _fetch_into(host: P2PHost, peer: str, digest: Hash32, max_size: int, sink: Sink) -> None:
    if len(digest) != 32:
        raise ProtocolViolation(f"a blob is named by a 32-byte sha256, got {len(digest)} bytes")
    await host.run_in_p2p_thread(_fetch, host, peer, digest, max_size, sink)


async def _fetch(host: P2PHost, peer: str, digest: Hash32, max_size: int, sink: Sink) -> None:
    stream = await host.open_trio_stream(peer, BLOB_PROTOCOL, MAX_FRAME)
    try:
        await stream.write_frames(
            [blob_pb2.BlobRequest(sha256=digest).SerializeToString()], host.read_timeout_s
        )
        await stream.close_write()
        manifest = _check_manifest(await stream.read_frame(host.read_timeout_s), peer, digest, max_size)
        await _receive_chunks(stream, manifest, digest, host.read_timeout_s, sink)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.reset()
        raise
    finally:
        with trio.CancelScope(shield=True):
            await stream.close()


def _check_manifest(raw: bytes | None, peer: str, digest: Hash32, max_size: int) -> Manifest:
    if raw is None:
        raise ProtocolViolation(f"peer {peer} closed the blob stream without a manifest")
    msg = blob_pb2.BlobManifest()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ProtocolViolation(f"malformed blob manifest from {peer}: {exc}") from exc
    if not msg.found:
        raise BlobNotFound(f"peer {peer} does not hold blob {digest.hex()}", hint="ask another peer")
    if msg.size > max_size:
        raise BlobTooLarge(f"blob {digest.hex()} is {msg.size} bytes, over the {max_size}-byte limit")
    if not 0 < msg.chunk_size <= MAX_CHUNK:
        raise ProtocolViolation(
            f"peer {peer} proposes {msg.chunk_size}-byte chunks; the limit is {MAX_CHUNK}"
        )
    expected_chunks = -(-msg.size // msg.chunk_size)
    if len(msg.chunk_sha256) != expected_chunks or any(len(h) != 32 for h in msg.chunk_sha256):
        raise ProtocolViolation(
            f"blob manifest from {peer} lists {len(msg.chunk_sha256)} chunk hashes, not {expected_chunks}"
        )
    return Manifest(msg.size, msg.chunk_size, tuple(Hash32(bytes(h)) for h in msg.chunk_sha256))


async def _receive_chunks(
    stream: FramedStream, manifest: Manifest, digest: Hash32, timeout_s: float, sink: Sink
) -> None:
    whole = hashlib.sha256()
    for index, expected in enumerate(manifest.chunk_sha256):
        want = min(manifest.chunk_size, manifest.size - index * manifest.chunk_size)
        chunk = await stream.read_frame(timeout_s)
        if chunk is None:
            total = len(manifest.chunk_sha256)
            raise BlobIntegrityError(f"blob {digest.hex()} truncated: ended at chunk {index} of {total}")
        if len(chunk) != want or hashlib.sha256(chunk).digest() != expected:
            raise BlobIntegrityError(f"chunk {index} of blob {digest.hex()} does not match its manifest hash")
        whole.update(chunk)
        sink(chunk)
    if whole.digest() != digest:
        raise BlobIntegrityError(f"blob {digest.hex()} reassembled to a different sha256; the manifest lied")
