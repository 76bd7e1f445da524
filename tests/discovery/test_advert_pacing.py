"""What a provider's advert costs the overlay, on real hosts: a change of load alone is gossiped
but not walked into the DHT again, and peers that join are greeted with the advert already
signed, paced, and only once however often they reconnect."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from discovery_support import offer, register, settings, start_node, wait_for_topic_peers

from node.chain.keys import NodeKey
from node.discovery.registry_view import CachedRegistryView
from node.p2p.gossip import ADVERT_TOPIC

if TYPE_CHECKING:
    from discovery_support import Chain, NodesFactory

    from node.p2p.host import P2PHost

pytestmark = pytest.mark.integration


def _count_calls(monkeypatch: pytest.MonkeyPatch, host: P2PHost, name: str) -> list[tuple[Any, ...]]:
    """Record each call of the real host's `name` (it still does its work)."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(host, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(host, name, counted)
    return calls


async def test_cannot_make_a_provider_walk_the_dht_on_every_load_change(
    chain: Chain, nodes: NodesFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.discovery.service.DHT_PUT_DELAY_S", 0.05)
    provider = chain.keys[0]
    await register(chain, provider)
    registry = CachedRegistryView(chain.registry)
    async with nodes([provider, NodeKey.generate()], registry, settings(), providers=1) as (seller, buyer):
        stores = _count_calls(monkeypatch, seller.host, "dht_put")
        base = offer()
        for free in (3, 2, 1, 0, 1, 2, 3, 4, 3, 2):  # every job that starts or ends
            await seller.discovery.announce(replace(base, free_slots=free))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        assert len(stores) <= 1  # at most the first advert of the fixture, stored late
        # The gossip carried every change: the buyer sees the last load.
        await buyer.discovery.directory.wait_for(
            lambda d: (a := d.get(provider.address)) is not None and a.offer.free_slots == 2, timeout_s=10
        )
        # A change of what is offered is stored at once.
        await seller.discovery.announce(replace(base, free_slots=2, prices=offer(price=2 * 10**15).prices))
        async with asyncio.timeout(10):
            while len(stores) < 2:  # noqa: ASYNC110 - the host has no event for it
                await asyncio.sleep(0.05)
        found = await buyer.discovery.lookup(provider.address, connect=False)
        assert found is not None
        assert found.offer.prices == offer(price=2 * 10**15).prices


async def test_can_greet_a_newcomer_with_the_advert_as_signed_and_never_twice(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.discovery.service.GREET_AFTER_S", 0.2)
    monkeypatch.setattr("node.discovery.service.GREET_MIN_GAP_S", 1.0)
    provider = chain.keys[0]
    await register(chain, provider)
    registry = CachedRegistryView(chain.registry)
    # No refresh during the test: whatever a newcomer gets, a greeting sent.
    quiet = settings(advert_refresh_s=1800.0, advert_ttl_s=3000.0)
    async with start_node(provider, registry, quiet, provider_offer=offer()) as seller:
        async with asyncio.timeout(10):
            while seller.discovery.current is None:  # noqa: ASYNC110 - its first announce, at start
                await asyncio.sleep(0.05)
        first = seller.discovery.current
        publishes = _count_calls(monkeypatch, seller.host, "publish")
        async with start_node(NodeKey.generate(), registry, quiet) as buyer:
            await buyer.host.connect(seller.host.addrs[0])
            await wait_for_topic_peers([seller.host, buyer.host])
            await buyer.discovery.directory.wait_for(lambda d: provider.address in d, timeout_s=15)
            assert seller.discovery.current is first  # the same advert, not a new sequence
            got = buyer.discovery.directory.get(provider.address)
            assert got is not None
            assert first is not None
            assert got.sequence == first.sequence
            await asyncio.sleep(1.5)
            greeted = len(publishes)
            assert greeted <= 1
            # It drops off and comes back, again and again: it is not greeted again.
            for _ in range(3):
                await buyer.host.disconnect(seller.host.peer_id)
                await asyncio.sleep(0.3)
                await buyer.host.connect(seller.host.addrs[0])
                await wait_for_topic_peers([seller.host, buyer.host])
            await asyncio.sleep(2.5)
            assert len(publishes) == greeted
            assert {args[0] for args in publishes} <= {ADVERT_TOPIC}
