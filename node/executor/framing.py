"""Messages between the node and a worker over a SOCK_SEQPACKET Unix socket.

Each message is one packet: a 16-byte header, then the body inline, or, when the body is larger
than `INLINE_LIMIT`, the body in a sealed memfd passed with SCM_RIGHTS (measured here: memfd moves
~600 MiB/s, a pipe ~250 MiB/s; a 64 KiB body inline takes 20 µs a round trip, through a memfd
78 µs, the memfd's set-up and checks). A RUN or RESULT body is a table of item lengths followed by the
items; READY and ERROR bodies are JSON. Stdlib only: the worker imports this inside the sandbox.

Either end may be hostile (a worker runs code the node does not trust), so a receiver believes
nothing it has not checked: control bodies (READY, ERROR, SHUTDOWN) are inline and small, item
bodies are capped by the receiver per message and per item, and an fd is read only when it is a
memfd sealed against any change, so what was checked is what is read.
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

HEADER = struct.Struct("<BBHIQ")  # kind, flags, item count, request id, body length
ITEM_LEN = struct.Struct("<Q")
# Under the default socket buffer (208 KiB), which a SOCK_SEQPACKET packet must fit.
INLINE_LIMIT = 128 * 1024
# READY and ERROR are a few hundred bytes of JSON; the cap leaves room, never a memfd's worth.
CONTROL_LIMIT = 32 * 1024
_OFFLOAD_BYTES = 1 << 20
FLAG_MEMFD = 1
_T = TypeVar("_T")
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class Kind(enum.IntEnum):
    READY = 1  # worker → node: model loaded; JSON describing the execution profile
    RUN = 2  # node → worker: a batch of job inputs
    RESULT = 3  # worker → node: one output per input, same order
    ERROR = 4  # worker → node: JSON {"kind": ..., "message": ...}; the worker stays up
    SHUTDOWN = 5  # node → worker: exit cleanly
    TOKENS = 6  # worker → node: JSON {"index": i, "text": "…"}, text a job produced so far (streaming)
    CANCEL = 7  # node → worker: JSON {"index": i}, stop that job of the batch in flight


class FramingError(Exception):
    """The peer broke the framing rules; the connection cannot be trusted any more."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message; RUN and RESULT carry `items` (one per job), the other kinds a `body`."""

    kind: Kind
    request_id: int
    count: int
    body: bytes
    items: list[bytes]


ITEM_KINDS = frozenset({Kind.RUN, Kind.RESULT})
_RECV_TRUNCATED = socket.MSG_TRUNC | socket.MSG_CTRUNC
Body = bytes | list[bytes]


def pack_items(items: list[bytes]) -> list[bytes]:
    """The parts of an item body: the length table, then each item (written out without joining)."""
    return [b"".join(ITEM_LEN.pack(len(item)) for item in items), *items]


def encode(kind: Kind, request_id: int, body: Body, count: int = 0) -> tuple[bytes, list[int]]:
    """Header plus inline body, or header plus the fd of a sealed memfd holding the body."""
    parts = body if isinstance(body, list) else [body]
    size = sum(len(part) for part in parts)
    if size <= INLINE_LIMIT:
        return HEADER.pack(kind, 0, count, request_id, size) + b"".join(parts), []
    fd = os.memfd_create("gpunode-body", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        for part in parts:
            view, written = memoryview(part), 0
            while written < len(part):
                written += os.write(fd, view[written:])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return HEADER.pack(kind, FLAG_MEMFD, count, request_id, size), [fd]


def decode(packet: bytes, fds: list[int], *, max_body: int, max_item: int | None = None) -> Message:
    """Parse one packet; closes every received fd whatever happens.

    `max_body` caps a RUN or RESULT body, `max_item` each of its items; control bodies are capped
    at `CONTROL_LIMIT` whatever the caller allows.
    """
    try:
        if len(packet) < HEADER.size:
            raise FramingError(f"packet of {len(packet)} bytes is shorter than a header")
        kind, flags, count, request_id, body_len = HEADER.unpack_from(packet)
        if kind not in Kind.__members__.values():
            raise FramingError(f"unknown message kind {kind}")
        kind = Kind(kind)
        limit = max_body if kind in ITEM_KINDS else CONTROL_LIMIT
        if body_len > limit:
            raise FramingError(f"{kind.name} body of {body_len} bytes is over the limit of {limit}")
        if kind not in ITEM_KINDS and (flags & FLAG_MEMFD or count):
            raise FramingError(f"a {kind.name} body is inline and carries no items")
        read = _body_reader(packet, fds, flags, body_len)
        if kind in ITEM_KINDS:
            return Message(kind, request_id, count, b"", _read_items(read, count, body_len, max_item))
        return Message(kind, request_id, count, read(0, body_len), [])
    finally:
        for fd in fds:
            os.close(fd)


def _body_reader(packet: bytes, fds: list[int], flags: int, body_len: int) -> Callable[[int, int], bytes]:
    """A function reading (offset, length) of the body: straight from the memfd, one copy per item."""
    if flags & ~FLAG_MEMFD:
        raise FramingError(f"unknown header flags {flags:#x}")
    if not flags & FLAG_MEMFD:
        if fds or len(packet) - HEADER.size != body_len:
            raise FramingError("inline body length does not match its header")
        return lambda offset, length: packet[HEADER.size + offset : HEADER.size + offset + length]
    if len(fds) != 1 or len(packet) != HEADER.size:
        raise FramingError("a memfd body needs exactly one fd and no inline bytes")
    fd = fds[0]
    _check_sealed_memfd(fd)
    if os.fstat(fd).st_size != body_len:
        raise FramingError("memfd size does not match its header")

    def pread(offset: int, length: int) -> bytes:
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise FramingError("memfd body was cut short")
        return data

    return pread


def _check_sealed_memfd(fd: int) -> None:
    """Only a memfd sealed against writes and resizing: a file, pipe, socket or device fd could
    block the reader, change under it, or be far larger than it says."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        mode = os.fstat(fd).st_mode
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS) if stat.S_ISREG(mode) else 0
    except OSError as exc:
        raise FramingError(f"the body's fd is not a sealed memfd ({exc.strerror})") from None
    if not target.startswith("/memfd:") or not stat.S_ISREG(mode):
        raise FramingError("the body's fd is not a memfd")
    if seals & _SEALS != _SEALS:
        raise FramingError("the body's memfd is not sealed against writes and resizing")


def _read_items(
    read: Callable[[int, int], bytes], count: int, body_len: int, max_item: int | None
) -> list[bytes]:
    table_len = ITEM_LEN.size * count
    if body_len < table_len:
        raise FramingError(f"body of {body_len} bytes cannot hold a table of {count} items")
    table = read(0, table_len)
    lengths = [ITEM_LEN.unpack_from(table, i * ITEM_LEN.size)[0] for i in range(count)]
    if table_len + sum(lengths) != body_len:
        raise FramingError("item lengths do not add up to the body length")
    if max_item is not None and lengths and max(lengths) > max_item:
        raise FramingError(f"an item of {max(lengths)} bytes is over the limit of {max_item}")
    items, cursor = [], table_len
    for length in lengths:
        items.append(read(cursor, length))
        cursor += length
    return items


def send_blocking(sock: socket.socket, kind: Kind, request_id: int, body: Body, count: int = 0) -> None:
    packet, fds = encode(kind, request_id, body, count)
    try:
        socket.send_fds(sock, [packet], fds) if fds else sock.sendall(packet)
    finally:
        for fd in fds:
            os.close(fd)


def recv_blocking(sock: socket.socket, *, max_body: int) -> Message | None:
    """The next message, or None when the peer closed the socket."""
    packet, fds, flags, _addr = socket.recv_fds(sock, HEADER.size + INLINE_LIMIT, 1)
    if not packet and not fds:
        return None
    _refuse_truncated(flags, fds)
    return decode(packet, fds, max_body=max_body)


def _refuse_truncated(flags: int, fds: list[int]) -> None:
    """A packet longer than any honest one, or more fds than one: the excess is already gone."""
    if flags & _RECV_TRUNCATED:
        for fd in fds:
            os.close(fd)
        raise FramingError("packet or its fds were larger than any the protocol allows")


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class AsyncChannel:
    """The node's end of a worker socket, driven by the event loop without threads."""

    def __init__(self, sock: socket.socket, *, max_body: int) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._max_body = max_body

    async def send(self, kind: Kind, request_id: int, body: Body, count: int = 0) -> None:
        size = len(body) if isinstance(body, bytes) else sum(len(part) for part in body)
        if size > _OFFLOAD_BYTES:  # copying megabytes into a memfd would stall the event loop
            packet, fds = await asyncio.to_thread(encode, kind, request_id, body, count)
        else:
            packet, fds = encode(kind, request_id, body, count)
        try:
            await self._wait_until(lambda: socket.send_fds(self._sock, [packet], fds), writable=True)
        finally:
            for fd in fds:
                os.close(fd)

    async def recv(self, *, max_body: int | None = None, max_item: int | None = None) -> Message | None:
        """The next message, or None at end of stream; `max_body` tightens the channel's cap."""
        packet, fds, flags, _addr = await self._wait_until(
            lambda: socket.recv_fds(self._sock, HEADER.size + INLINE_LIMIT, 1), writable=False
        )
        if not packet and not fds:
            return None
        _refuse_truncated(flags, fds)
        limit = self._max_body if max_body is None else min(max_body, self._max_body)
        body_len = HEADER.unpack_from(packet)[4] if len(packet) >= HEADER.size else 0
        if fds and _OFFLOAD_BYTES < body_len <= limit:
            return await asyncio.to_thread(decode, packet, fds, max_body=limit, max_item=max_item)
        return decode(packet, fds, max_body=limit, max_item=max_item)

    async def _wait_until(self, attempt: Callable[[], _T], *, writable: bool) -> _T:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return attempt()
            except (BlockingIOError, InterruptedError):
                pass
            ready = loop.create_future()
            fileno = self._sock.fileno()
            add, remove = (
                (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
            )
            add(fileno, _wake, ready)
            try:
                await ready
            finally:
                remove(fileno)

    def close(self) -> None:
        self._sock.close()
