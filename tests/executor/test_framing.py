"""Worker messages: inline and memfd bodies round-trip; broken framing is refused."""

from __future__ import annotations

import os
import socket

import pytest

from node.executor import framing
from node.executor.framing import AsyncChannel, FramingError, Kind


def test_can_round_trip_small_and_large_bodies() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        for body in (b"", b"small", os.urandom(framing.INLINE_LIMIT + 1), os.urandom(3 * 2**20)):
            framing.send_blocking(ours, Kind.READY, 7, body)
            message = framing.recv_blocking(theirs, max_body=2**23)
            assert message is not None
            assert (message.kind, message.request_id, message.body, message.items) == (
                Kind.READY,
                7,
                body,
                [],
            )


@pytest.mark.parametrize("sizes", [[0], [1, 0, 3000], [framing.INLINE_LIMIT, 5], [2**20, 2**21, 7]])
def test_can_round_trip_items_inline_and_through_memfd(sizes: list[int]) -> None:
    items = [os.urandom(size) for size in sizes]
    packet, fds = framing.encode(Kind.RUN, 9, framing.pack_items(items), len(items))
    assert bool(fds) == (sum(sizes) + 8 * len(sizes) > framing.INLINE_LIMIT)
    message = framing.decode(packet, fds, max_body=2**23)
    assert (message.kind, message.count, message.items) == (Kind.RUN, len(items), items)


def test_cannot_send_items_that_do_not_add_up() -> None:
    table = framing.pack_items([b"abc"])[0]
    packet, fds = framing.encode(Kind.RESULT, 1, [table, b"abc", b"extra"], 1)
    with pytest.raises(FramingError, match="do not add up"):
        framing.decode(packet, fds, max_body=1000)
    packet, fds = framing.encode(Kind.RESULT, 1, b"\0", 2)
    with pytest.raises(FramingError, match="cannot hold"):
        framing.decode(packet, fds, max_body=1000)


def test_cannot_exceed_the_body_limit_or_lie_about_lengths() -> None:
    packet, fds = framing.encode(Kind.READY, 1, b"x" * 100)
    assert fds == []
    with pytest.raises(FramingError, match="over the limit"):
        framing.decode(packet, [], max_body=10)
    with pytest.raises(FramingError, match="does not match"):
        framing.decode(packet[:-1], [], max_body=1000)
    with pytest.raises(FramingError, match="shorter than a header"):
        framing.decode(b"\x01", [], max_body=1000)
    with pytest.raises(FramingError, match="unknown message kind"):
        framing.decode(framing.HEADER.pack(99, 0, 0, 0, 0), [], max_body=1000)


def test_memfd_bodies_are_sealed_and_received_fds_closed() -> None:
    packet, fds = framing.encode(Kind.ERROR, 1, b"y" * (framing.INLINE_LIMIT + 10))
    assert len(fds) == 1
    with pytest.raises(PermissionError):  # sealed: the sender cannot change the body after sending
        os.write(fds[0], b"z")
    message = framing.decode(packet, fds, max_body=2**20)
    assert message.body == b"y" * (framing.INLINE_LIMIT + 10)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fds[0])


async def test_async_channel_talks_to_a_blocking_peer() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    channel = AsyncChannel(ours, max_body=2**22)
    with theirs:
        big = os.urandom(2**21)
        await channel.send(Kind.RUN, 3, framing.pack_items([big]), count=1)
        got = framing.recv_blocking(theirs, max_body=2**22)
        assert got is not None
        assert got.items == [big]
        framing.send_blocking(theirs, Kind.RESULT, 3, framing.pack_items([b"done"]), count=1)
        reply = await channel.recv()
        assert reply is not None
        assert reply.items == [b"done"]
    assert await channel.recv() is None
    channel.close()
