"""A provider's load reaches other nodes over the real overlay: a significant change of its free
slots and queue goes out at once, without waiting for the periodic refresh."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from discovery_support import register, settings

from node.chain.keys import NodeKey
from node.discovery.registry_view import CachedRegistryView

if TYPE_CHECKING:
    from discovery_support import Chain, NodesFactory

    from node.discovery.directory import Directory

pytestmark = pytest.mark.integration


async def test_can_announce_a_significant_load_change_before_the_refresh(
    chain: Chain, nodes: NodesFactory
) -> None:
    provider = chain.keys[0]
    await register(chain, provider)
    registry = CachedRegistryView(chain.registry)
    # Refreshed every half hour: whatever arrives sooner was sent because the load changed.
    hourly = settings(advert_refresh_s=1800.0, advert_ttl_s=3000.0)
    async with nodes([provider, NodeKey.generate()], registry, hourly, providers=1) as (seller, buyer):
        directory = buyer.discovery.directory

        def load_is(free: int, queued: int) -> bool:
            advert = directory.get(provider.address)
            return advert is not None and (advert.offer.free_slots, advert.offer.queued) == (free, queued)

        def seen(d: Directory) -> bool:
            return load_is(4, 0)

        await directory.wait_for(seen, timeout_s=30)
        seller.discovery.set_load(0, 3)  # all four slots busy and three jobs waiting
        await directory.wait_for(lambda d: load_is(0, 3), timeout_s=30)
        seller.discovery.set_load(4, 0)  # idle again: paced, but due within the bucket's burst
        await directory.wait_for(lambda d: load_is(4, 0), timeout_s=30)
