"""The host itself: identity, Noise-only security, framing, errors a user can act on."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from node.chain.keys import NodeKey
from node.config import P2PSettings
from node.errors import P2PError, PeerTimeout, ProtocolViolation
from node.p2p.framing import decode_varint, encode_frame, encode_varint
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_from, peer_id_from_bytes, peer_id_to_address, peer_id_to_bytes
from node.p2p.stream import P2PStream

if TYPE_CHECKING:
    from conftest import HostsFactory


def test_peer_id_proves_the_ethereum_address() -> None:
    key = NodeKey.generate()
    peer = peer_id_from(key)
    assert peer_id_to_address(peer) == key.address == Account.from_key(key.private_key).address
    assert peer_id_to_address(str(peer)) == key.address
    assert peer_id_to_address(peer_id_to_bytes(str(peer))) == key.address
    assert peer_id_from_bytes(peer_id_to_bytes(str(peer))) == str(peer)


def test_cannot_derive_an_address_from_a_non_secp256k1_peer_id() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    ed_peer = ID.from_pubkey(create_new_key_pair().public_key)
    with pytest.raises(P2PError, match="does not embed a secp256k1 key"):
        peer_id_to_address(ed_peer)
    with pytest.raises(P2PError, match="malformed peer id"):
        peer_id_to_address("not-a-peer-id")


def test_cannot_use_a_key_of_the_wrong_length() -> None:
    with pytest.raises(P2PError, match="32 bytes"):
        peer_id_from(b"short")


@given(st.integers(min_value=0, max_value=2**34))
def test_varints_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))
    assert decode_varint(encoded[:-1]) is None


def test_oversize_frame_is_refused() -> None:
    with pytest.raises(ProtocolViolation, match="exceeds"):
        encode_frame(b"x" * 11, max_frame=10)
    with pytest.raises(ProtocolViolation, match="longer than"):
        decode_varint(b"\xff" * 6)


async def test_host_identity_is_the_node_key(running_hosts: HostsFactory) -> None:
    key = NodeKey.generate()
    async with P2PHost.start(key, P2PSettings()) as host:
        assert host.address == key.address
        assert host.peer_id == str(peer_id_from(key))
        assert all(a.endswith(f"/p2p/{host.peer_id}") for a in host.addrs)


async def test_only_noise_is_offered(running_hosts: HostsFactory) -> None:
    async with running_hosts(1) as (host,):
        transports = host._stack.host.get_network().upgrader.security_multistream.transports
        assert list(transports) == ["/noise"]


async def test_frames_travel_both_ways_and_close_cleanly(running_hosts: HostsFactory) -> None:
    received: list[bytes] = []

    async def echo(stream: P2PStream) -> None:
        while (frame := await stream.read_frame()) is not None:
            received.append(frame)
            await stream.write_frame(frame[::-1])

    async with running_hosts(2) as (server, client):
        server.set_stream_handler("/test/echo/1", echo)
        await client.connect(server.addrs[0])
        stream = await client.open_stream(server.peer_id, "/test/echo/1")
        for payload in (b"", b"a", os.urandom(100_000)):
            await stream.write_frame(payload)
            assert await stream.read_frame() == payload[::-1]
        await stream.close_write()
        assert await stream.read_frame() is None
        assert len(received) == 3


async def test_oversize_frame_from_peer_is_a_protocol_violation(running_hosts: HostsFactory) -> None:
    async def big(stream: P2PStream) -> None:
        await stream.write_frame(b"x" * 2000)

    async with running_hosts(2) as (server, client):
        server.set_stream_handler("/test/big/1", big)
        await client.connect(server.addrs[0])
        stream = await client.open_stream(server.peer_id, "/test/big/1", max_frame=1000)
        with pytest.raises(ProtocolViolation, match="2000-byte frame"):
            await stream.read_frame()


async def test_silent_peer_times_out(running_hosts: HostsFactory) -> None:
    async def silent(stream: P2PStream) -> None:
        await asyncio.sleep(10)

    async with running_hosts(2) as (server, client):
        server.set_stream_handler("/test/silent/1", silent)
        await client.connect(server.addrs[0])
        stream = await client.open_stream(server.peer_id, "/test/silent/1")
        with pytest.raises(PeerTimeout, match="sent nothing"):
            await stream.read_frame(timeout_s=0.5)


async def test_errors_name_the_problem(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (server, client):
        with pytest.raises(P2PError, match="malformed multiaddr"):
            await client.connect("/not/a/multiaddr")
        await client.connect(server.addrs[0])
        with pytest.raises(P2PError, match="cannot open /test/unserved/1"):
            await client.open_stream(server.peer_id, "/test/unserved/1")


async def test_cannot_dial_a_closed_port(running_hosts: HostsFactory) -> None:
    async with running_hosts(1) as (client,):
        async with running_hosts(1) as (gone,):
            addr = gone.addrs[0]
        with pytest.raises(P2PError, match="cannot connect"):
            await client.connect(addr)


async def test_ping_and_gossip_between_two_hosts(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (a, b):
        await a.connect(b.addrs[0])
        assert await a.ping(b.peer_id) >= 0
        sub_b = await b.subscribe("test/topic")
        await a.subscribe("test/topic")
        async with asyncio.timeout(10):
            while not await a.topic_peers("test/topic"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await a.publish("test/topic", b"hello")
        message = await asyncio.wait_for(sub_b.get(), 10)
        assert (message.source, message.data) == (a.peer_id, b"hello")


async def test_cannot_listen_on_a_taken_port(running_hosts: HostsFactory) -> None:
    async with running_hosts(1) as (first,):
        taken = first.addrs[0].split("/p2p/")[0]
        with pytest.raises(P2PError, match="cannot listen"):
            async with P2PHost.start(os.urandom(32), P2PSettings(listen=[taken])):
                pass


@pytest.mark.integration
async def test_hosts_find_each_other_by_mdns() -> None:
    settings = P2PSettings(mdns=True)
    async with P2PHost.start(os.urandom(32), settings) as a, P2PHost.start(os.urandom(32), settings) as b:
        async with asyncio.timeout(20):
            # mDNS discovery has no event on this side; poll the connection list.
            while b.peer_id not in a.connected_peers():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
