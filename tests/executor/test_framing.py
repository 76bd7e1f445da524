"""Worker messages: inline and memfd bodies round-trip; broken framing is refused."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import pytest

from node.executor import framing
from node.executor.framing import AsyncChannel, FramingError, Kind


def test_can_round_trip_control_bodies_up_to_their_limit() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        for body in (b"", b"small", os.urandom(framing.CONTROL_LIMIT)):
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
    packet, fds = framing.encode(Kind.RESULT, 1, framing.pack_items([b"x" * 100]), 1)
    assert fds == []
    with pytest.raises(FramingError, match="over the limit"):
        framing.decode(packet, [], max_body=10)
    with pytest.raises(FramingError, match="item of 100 bytes is over the limit"):
        framing.decode(packet, [], max_body=1000, max_item=99)
    with pytest.raises(FramingError, match="does not match"):
        framing.decode(packet[:-1], [], max_body=1000)
    with pytest.raises(FramingError, match="shorter than a header"):
        framing.decode(b"\x01", [], max_body=1000)
    with pytest.raises(FramingError, match="unknown message kind"):
        framing.decode(framing.HEADER.pack(99, 0, 0, 0, 0), [], max_body=1000)


def test_memfd_bodies_are_sealed_and_received_fds_closed() -> None:
    item = b"y" * (framing.INLINE_LIMIT + 10)
    packet, fds = framing.encode(Kind.RESULT, 1, framing.pack_items([item]), 1)
    assert len(fds) == 1
    with pytest.raises(PermissionError):  # sealed: the sender cannot change the body after sending
        os.write(fds[0], b"z")
    message = framing.decode(packet, fds, max_body=2**20)
    assert message.items == [item]
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


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sealed_memfd(size: int, *, seal: bool = True) -> int:
    fd = os.memfd_create("attack", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)  # sparse: costs the sender nothing, would cost the reader `size` bytes
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, framing._SEALS)
    return fd


def test_cannot_make_the_node_read_a_huge_control_body() -> None:
    # 16 bytes of header and a sparse 8 GiB memfd once grew the node by the whole body.
    before = _open_fds()
    for kind in (Kind.READY, Kind.ERROR):
        packet = framing.HEADER.pack(kind, framing.FLAG_MEMFD, 0, 0, 8 * 2**30)
        with pytest.raises(FramingError, match="over the limit of 32768"):
            framing.decode(packet, [_sealed_memfd(8 * 2**30)], max_body=2**40)
        small = framing.HEADER.pack(kind, framing.FLAG_MEMFD, 0, 0, 100)
        with pytest.raises(FramingError, match="inline"):
            framing.decode(small, [_sealed_memfd(100)], max_body=2**40)
    assert _open_fds() == before


def test_cannot_pass_an_fd_that_is_not_a_sealed_memfd(tmp_path: Path) -> None:
    size = framing.INLINE_LIMIT + 8
    body = framing.pack_items([b"z" * (size - 8)])
    packet = framing.HEADER.pack(Kind.RESULT, framing.FLAG_MEMFD, 1, 1, size)
    regular = tmp_path / "body"
    regular.write_bytes(b"".join(body))
    reader, writer = os.pipe()
    os.close(writer)
    left, right = socket.socketpair()
    right.close()
    before = _open_fds()
    cases = {
        "unsealed memfd": _sealed_memfd(size, seal=False),
        "regular file": os.open(regular, os.O_RDONLY),
        "pipe": reader,
        "socket": left.detach(),
        "device": os.open("/dev/zero", os.O_RDONLY),
    }
    for what, fd in cases.items():
        with pytest.raises(FramingError, match=r"not a memfd|not a sealed memfd|not sealed"):
            framing.decode(packet, [fd], max_body=2**20)
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)  # closed whatever the verdict
        assert what
    longer = _sealed_memfd(size * 4)
    with pytest.raises(FramingError, match="size does not match"):
        framing.decode(packet, [longer], max_body=2**20)
    assert _open_fds() < before


def test_cannot_smuggle_a_longer_packet_or_extra_fds() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        before = _open_fds()
        oversize = framing.HEADER.pack(Kind.ERROR, 0, 0, 0, 10) + b"x" * (framing.INLINE_LIMIT + 100)
        ours.sendall(oversize)
        with pytest.raises(FramingError, match="larger than any"):
            framing.recv_blocking(theirs, max_body=2**20)
        fds = [_sealed_memfd(16) for _ in range(3)]
        socket.send_fds(ours, [framing.HEADER.pack(Kind.RESULT, framing.FLAG_MEMFD, 0, 1, 16)], fds)
        for fd in fds:
            os.close(fd)
        with pytest.raises(FramingError, match="larger than any"):
            framing.recv_blocking(theirs, max_body=2**20)
        assert _open_fds() == before


def test_cannot_use_unknown_flags_or_items_in_a_control_message() -> None:
    with pytest.raises(FramingError, match="unknown header flags"):
        framing.decode(framing.HEADER.pack(Kind.RESULT, 6, 0, 1, 0), [], max_body=100)
    with pytest.raises(FramingError, match="carries no items"):
        framing.decode(framing.HEADER.pack(Kind.READY, 0, 3, 0, 0), [], max_body=100)
