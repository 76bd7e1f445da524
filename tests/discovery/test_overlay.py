"""Discovery across many real nodes: propagation, expiry, rejoin through the DHT."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from discovery_support import MODEL, offer, register, settings, start_node

from node.chain.keys import NodeKey
from node.discovery.registry_view import CachedRegistryView

if TYPE_CHECKING:
    from discovery_support import Chain, Node, NodesFactory

    from node.discovery.advert import ProviderAdvert
    from node.types import Address

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_every_advert_reaches_every_node(chain: Chain, nodes: NodesFactory) -> None:
    providers = chain.keys[:8]
    for key in providers:
        await register(chain, key)
    # Eight providers and four plain clients (fresh keys, not registered): twelve nodes.
    keys = [*providers, *(NodeKey.generate() for _ in range(4))]
    # A registry cache, as a node runs it: after the first advert of each provider, validation
    # stays in the p2p thread (the quick path); the first one goes to the chain.
    registry = CachedRegistryView(chain.registry)
    async with nodes(keys, registry, settings(), providers=len(providers)) as running:
        for node in running:
            await node.discovery.directory.wait_for(lambda d: len(d) == len(providers), timeout_s=30)
        for node in running:
            found = node.discovery.directory.find(model_id=MODEL, max_price_wei=10**15)
            assert {a.address for a in found} == {k.address for k in providers}
            assert sum(node.discovery.validator.rejected.values()) == 0
        # Second round: every registry answer is cached now, so no node asks the chain again.
        lookups = registry.lookups
        for node in running[: len(providers)]:
            await node.discovery.announce(offer(price=10**14))
        for node in running:
            await node.discovery.directory.wait_for(
                lambda d: len(d.find(model_id=MODEL, max_price_wei=10**14)) == len(providers), timeout_s=30
            )
        assert registry.lookups == lookups


async def test_node_that_leaves_expires_and_is_found_again_after_rejoining(
    chain: Chain, nodes: NodesFactory
) -> None:
    keys = chain.keys[:5]
    for key in keys:
        await register(chain, key)
    short = settings(advert_ttl_s=3.0, advert_refresh_s=1.0)
    leaver = keys[4]
    async with nodes(keys[:4], chain.registry, short, providers=0) as running:
        async with start_node(leaver, chain.registry, short, provider_offer=offer()) as node:
            await node.host.connect(running[0].host.addrs[0])
            for other in running:
                await other.discovery.directory.wait_for(lambda d: leaver.address in d, timeout_s=30)
            first_addrs = node.host.addrs
            first_sequence = node.discovery.current.sequence if node.discovery.current else 0
            # The leaver's record is in the DHT too.
            assert (await lookup_eventually(running[3], leaver.address, connect=False)) is not None

        for other in running:
            await other.discovery.directory.wait_for(lambda d: leaver.address not in d, timeout_s=15)

        rejoin = settings(advert_ttl_s=3.0, advert_refresh_s=1.0, bootstrap=[running[0].host.addrs[0]])
        async with start_node(leaver, chain.registry, rejoin, provider_offer=offer(price=10**14)) as node:
            assert node.host.addrs != first_addrs
            await running[0].discovery.directory.wait_for(lambda d: leaver.address in d, timeout_s=30)
            found = await lookup_eventually(running[2], leaver.address, sequence_after=first_sequence)
            assert found is not None
            assert found.listen_addrs == tuple(node.host.addrs)
            assert found.price_for(MODEL) == 10**14
            # The lookup dials the provider; under load the dial may need a retry to land.
            await connected_eventually(running[2], node)
            for other in running:
                await other.discovery.directory.wait_for(lambda d: leaver.address in d, timeout_s=30)


async def connected_eventually(node: Node, peer: Node, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while peer.host.peer_id not in node.host.connected_peers():
            await node.host.connect(peer.host.addrs[0])
            await asyncio.sleep(0.2)


async def lookup_eventually(
    node: Node, address: Address, *, connect: bool = True, sequence_after: int = 0, timeout_s: float = 15.0
) -> ProviderAdvert | None:
    """Look `address` up in the DHT until a record newer than `sequence_after` shows up: a
    provider stores its advert there a moment after gossiping it."""
    async with asyncio.timeout(timeout_s):
        while True:
            found = await node.discovery.lookup(address, connect=connect)
            if found is not None and found.sequence > sequence_after:
                return found
            await asyncio.sleep(0.2)
