"""Framed streams: the trio side reads and writes frames; `P2PStream` is its asyncio face."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.network.stream.net_stream import NetStream

from node.errors import P2PError, PeerTimeout, ProtocolViolation
from node.p2p.framing import DEFAULT_MAX_FRAME, decode_varint, encode_frame

if TYPE_CHECKING:
    from node.p2p.bridge import TrioBridge

# yamux hands out at most one receive window at a time; asking for more costs nothing.
_READ_SIZE = 256 * 1024


class FramedStream:
    """A libp2p stream read and written as length-prefixed frames. Lives in the trio thread."""

    def __init__(self, stream: INetStream, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        # Swarm streams are NetStreams; the INetStream interface lacks close_write and is_closed.
        self.raw: NetStream = stream  # type: ignore[assignment]
        self.max_frame = max_frame
        self._buf = bytearray()
        self._eof = False

    @property
    def remote_peer(self) -> str:
        return str(self.raw.muxed_conn.peer_id)

    @property
    def protocol(self) -> str:
        return str(self.raw.get_protocol() or "")

    async def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        if self._eof:
            return False
        try:
            chunk = await self.raw.read(_READ_SIZE)
        except StreamEOF:
            chunk = b""
        except StreamReset as exc:
            raise P2PError(
                f"peer {self.remote_peer} reset the stream", hint="the peer aborted or died"
            ) from exc
        except StreamError as exc:
            raise P2PError(f"stream to {self.remote_peer} broke: {exc}") from exc
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def read_frame(self, timeout_s: float | None) -> bytes | None:
        """The next frame's payload, or None when the peer closed its side cleanly between frames."""
        with trio.move_on_after(math.inf if timeout_s is None else timeout_s):
            return await self._read_frame()
        raise PeerTimeout(
            f"peer {self.remote_peer} sent nothing on {self.protocol} for {timeout_s} s",
            hint="the peer is slow, overloaded or gone",
        )

    async def _read_frame(self) -> bytes | None:
        while (header := decode_varint(self._buf)) is None:
            if not await self._fill():
                if self._buf:
                    raise ProtocolViolation(
                        f"peer {self.remote_peer} closed the stream inside a frame header"
                    )
                return None
        length, used = header
        if length > self.max_frame:
            raise ProtocolViolation(
                f"peer {self.remote_peer} announced a {length}-byte frame; the limit is {self.max_frame}"
            )
        while len(self._buf) < used + length:
            if not await self._fill():
                got = len(self._buf) - used
                raise ProtocolViolation(
                    f"peer {self.remote_peer} closed the stream after {got} of {length} bytes"
                )
        payload = bytes(self._buf[used : used + length])
        del self._buf[: used + length]
        return payload

    async def write_frames(self, payloads: list[bytes], timeout_s: float | None) -> None:
        data = b"".join(encode_frame(p, self.max_frame) for p in payloads)
        with trio.move_on_after(math.inf if timeout_s is None else timeout_s):
            try:
                await self.raw.write(data)
            except StreamError as exc:
                raise P2PError(
                    f"cannot write to peer {self.remote_peer}: {exc}", hint="the peer is gone"
                ) from exc
            return
        raise PeerTimeout(f"peer {self.remote_peer} did not take our data for {timeout_s} s")

    async def close_write(self) -> None:
        # The peer may already be gone; then there is nothing left to half-close.
        with contextlib.suppress(StreamError):
            await self.raw.close_write()

    async def close(self) -> None:
        with contextlib.suppress(StreamError):
            await self.raw.close()

    async def reset(self) -> None:
        with contextlib.suppress(StreamError):
            await self.raw.reset()


class P2PStream:
    """asyncio face of a `FramedStream`: every call runs in the trio thread, with a timeout."""

    def __init__(self, inner: FramedStream, bridge: TrioBridge, *, read_timeout: float) -> None:
        self._inner = inner
        self._bridge = bridge
        self.read_timeout = read_timeout
        self.remote_peer = inner.remote_peer
        self.protocol = inner.protocol

    async def read_frame(self, timeout_s: float | None = None) -> bytes | None:
        """Next frame, None at a clean end of stream; `PeerTimeout` after `timeout_s` (or read_timeout)."""
        return await self._bridge.call(
            self._inner.read_frame, self.read_timeout if timeout_s is None else timeout_s
        )

    async def write_frame(self, payload: bytes, timeout_s: float | None = None) -> None:
        await self.write_frames([payload], timeout_s)

    async def write_frames(self, payloads: list[bytes], timeout_s: float | None = None) -> None:
        await self._bridge.call(
            self._inner.write_frames, payloads, self.read_timeout if timeout_s is None else timeout_s
        )

    async def close_write(self) -> None:
        """Half-close: the peer reads end of stream; we can still read its answer."""
        await self._bridge.call(self._inner.close_write)

    async def close(self) -> None:
        await self._bridge.call(self._inner.close)

    async def reset(self) -> None:
        await self._bridge.call(self._inner.reset)


class InboundFrames:
    """What the peer sends on a stream, read one frame at a time by a single read in flight: its
    next frame, and meanwhile whether it is still there (its end or a reset ends that read)."""

    def __init__(self, stream: P2PStream) -> None:
        self._stream = stream
        self.peer = stream.remote_peer
        self._read: asyncio.Future[bytes | None] | None = None

    def watch(self) -> asyncio.Future[bytes | None]:
        """The read in flight, started if there is none: done at the next frame, the end of the
        peer's side, or a reset."""
        if self._read is None:
            self._read = asyncio.ensure_future(self._stream.read_frame(math.inf))
        return self._read

    async def next_frame(self, idle_s: float) -> bytes | None:
        """The peer's next frame, None at a clean end; `PeerTimeout` after `idle_s` of silence."""
        read = self.watch()
        if not (await asyncio.wait({read}, timeout=idle_s))[0]:
            raise PeerTimeout(
                f"peer {self.peer} sent nothing on {self._stream.protocol} for {idle_s} s",
                hint="the peer is slow, overloaded or gone",
            )
        self._read = None
        return read.result()

    async def close(self) -> None:
        read, self._read = self._read, None
        if read is None:
            return
        read.cancel()
        await asyncio.wait({read})  # its cancel reaches the p2p thread before the stream closes
        if not read.cancelled():
            read.exception()  # a reset or a frame nobody reads any more: the stream is done with
