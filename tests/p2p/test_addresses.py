"""What a node tells peers about its addresses, and what it dials of theirs."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import multiaddr
import pytest

from node.config import P2PSettings
from node.errors import ConfigError, P2PError
from node.p2p.addresses import MAX_DIAL_ADDRS, advertised_addrs, dial_candidates
from node.p2p.host import P2PHost

if TYPE_CHECKING:
    from conftest import HostsFactory

PEER = "16Uiu2HAmBB5EdcAj6cBZTmzjfNbo93SVPZ8Axtey39n7RZvYSq5c"
OTHER = "16Uiu2HAkyoEgc5zAnwNoWRFuTHpvMTJyz1zAPuKppTrQhd8kw6oE"


def _ips(version: int) -> list[str]:
    return ["192.0.2.2", "127.0.0.1"] if version == 4 else ["fd00::2", "fe80::1", "::1"]


def test_a_wildcard_listener_is_advertised_at_each_interface_never_at_0_0_0_0() -> None:
    addrs = advertised_addrs([multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/4001")], [], ips=_ips)
    assert [str(a) for a in addrs] == ["/ip4/192.0.2.2/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]
    six = advertised_addrs([multiaddr.Multiaddr("/ip6/::/tcp/4001")], [], ips=_ips)
    # Link-local addresses need a zone, so no peer could dial them from an advert.
    assert [str(a) for a in six] == ["/ip6/fd00::2/tcp/4001", "/ip6/::1/tcp/4001"]


def test_announced_addresses_come_first() -> None:
    addrs = advertised_addrs(
        [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")], ["/dns4/gpu.example.org/tcp/4001"], ips=_ips
    )
    assert [str(a) for a in addrs] == ["/dns4/gpu.example.org/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]


def test_only_dialable_addresses_of_the_peer_are_dialled() -> None:
    given = [
        "/ip4/0.0.0.0/tcp/4001",
        "/ip6/::/tcp/4001",
        "/ip4/224.0.0.251/tcp/4001",
        "/ip4/255.255.255.255/tcp/1",
        "/ip4/10.0.0.1/udp/4001",
        "garbage",
        "/ip4/300.1.1.1/tcp/4001",
        f"/ip4/10.0.0.2/tcp/4001/p2p/{OTHER}",
        "/ip4/10.0.0.3/tcp/4001" + "/tcp/1" * 200,
        "/ip4/10.0.0.4/tcp/4001",
        f"/ip4/10.0.0.4/tcp/4001/p2p/{PEER}",
        "/dns4/gpu.example.org/tcp/4001",
    ]
    assert dial_candidates(given, PEER) == [
        f"/ip4/10.0.0.4/tcp/4001/p2p/{PEER}",
        f"/dns4/gpu.example.org/tcp/4001/p2p/{PEER}",
    ]


def test_a_huge_address_list_is_cut_to_a_few_dials() -> None:
    huge = [f"/ip4/10.{i // 256 % 256}.{i % 256}.1/tcp/4001" for i in range(100_000)]
    started = time.monotonic()
    picked = dial_candidates(huge, PEER)
    assert len(picked) == MAX_DIAL_ADDRS
    assert time.monotonic() - started < 1.0


def test_cannot_configure_a_bootstrap_peer_without_its_peer_id(tmp_path: object) -> None:
    from node.config import load_settings

    with pytest.raises(ConfigError, match=r"p2p\.bootstrap"):
        load_settings(home=tmp_path, p2p={"bootstrap": ["/ip4/127.0.0.1/tcp/4001"]})
    with pytest.raises(ConfigError, match=r"p2p\.announce"):
        load_settings(home=tmp_path, p2p={"announce": ["not a multiaddr"]})


async def test_a_node_listening_on_all_interfaces_advertises_and_is_reached_at_concrete_ones() -> None:
    settings = P2PSettings(listen=["/ip4/0.0.0.0/tcp/0"], read_timeout_s=2.0)
    async with (
        P2PHost.start(os.urandom(32), settings) as provider,
        P2PHost.start(os.urandom(32), P2PSettings(read_timeout_s=2.0)) as client,
    ):
        assert provider.addrs
        assert not any("/0.0.0.0/" in a for a in provider.addrs)
        # A peer's advert lists garbage before the real address: the client still gets through.
        garbage = ["/ip4/0.0.0.0/tcp/1", "nonsense", f"/ip4/127.0.0.1/tcp/1/p2p/{client.peer_id}"]
        reached = await client.connect_any([*garbage, *provider.addrs], provider.peer_id)
        assert reached is not None
        assert provider.peer_id in client.connected_peers()


async def test_a_dead_first_address_does_not_hide_a_live_one(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (a, b):
        dead = f"/ip4/127.0.0.1/tcp/1/p2p/{b.peer_id}"
        reached = await a.connect_any([dead, *b.addrs], b.peer_id)
        assert reached == b.addrs[0]


async def test_a_taken_port_names_the_setting_to_change() -> None:
    async with P2PHost.start(os.urandom(32), P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"])) as first:
        port = first.addrs[0].split("/tcp/")[1].split("/")[0]
        taken = P2PSettings(listen=[f"/ip4/127.0.0.1/tcp/{port}"])
        with pytest.raises(P2PError) as raised:
            async with P2PHost.start(os.urandom(32), taken):
                pass
        assert "p2p.listen" in str(raised.value.hint)


async def test_nodes_on_one_local_network_find_each_other_by_mdns() -> None:
    import asyncio

    settings = P2PSettings(listen=["/ip4/0.0.0.0/tcp/0"], mdns=True, read_timeout_s=2.0)
    async with P2PHost.start(os.urandom(32), settings) as a, P2PHost.start(os.urandom(32), settings) as b:
        if not (a.mdns and b.mdns):
            pytest.skip("no multicast on this network")
        async with asyncio.timeout(30):
            # The host reports no connection events; its peer list is what mDNS changes.
            while b.peer_id not in a.connected_peers():  # noqa: ASYNC110
                await asyncio.sleep(0.1)


def test_cannot_configure_a_peer_id_cut_short(tmp_path: object) -> None:
    from node.config import load_settings

    # What a user copies from an address wrapped over two lines of a terminal.
    cut = "/ip4/192.0.2.2/tcp/4001/p2p/16Uiu2HAmGjo8hvVRffni3E2Bwie8wgqyGPFzDTQKDtZZ9RTVk"
    with pytest.raises(ConfigError, match=r"p2p\.bootstrap"):
        load_settings(home=tmp_path, p2p={"bootstrap": [cut]})


async def test_an_unusable_bootstrap_address_costs_only_itself() -> None:
    async with P2PHost.start(os.urandom(32), P2PSettings(read_timeout_s=2.0)) as first:
        settings = P2PSettings.model_construct(
            listen=["/ip4/127.0.0.1/tcp/0"],
            bootstrap=["/ip4/192.0.2.2/tcp/4001/p2p/16Uiu2HAmGjo8hvVRffni3E2Bwie8w", first.addrs[0]],
            announce=[],
            mdns=False,
            advert_refresh_s=30.0,
            advert_ttl_s=120.0,
            job_timeout_s=30.0,
            read_timeout_s=2.0,
        )
        async with P2PHost.start(os.urandom(32), settings) as second:
            assert await second.connect_any(first.addrs, first.peer_id) is not None
            assert second.addrs
