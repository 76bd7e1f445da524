"""Bad adverts sent over real gossip: each is dropped with its reason, honest adverts still arrive."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from discovery_support import offer, register, settings, start_node, wait_for_topic_peers
from test_advert import advert_of

from node.chain.keys import NodeKey
from node.discovery.advert import MAX_ADVERT_BYTES, RejectReason, sign_advert
from node.discovery.validation import AdvertValidator
from node.p2p.gossip import ADVERT_TOPIC
from node.p2p.host import P2PHost

if TYPE_CHECKING:
    from discovery_support import Chain, Node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED = {
    RejectReason.BAD_SIGNATURE: 1,
    RejectReason.PEER_MISMATCH: 1,
    RejectReason.REPLAYED: 1,
    RejectReason.EXPIRED: 1,
    RejectReason.OVERSIZE: 1,
    RejectReason.NOT_REGISTERED: 2,  # one never registered, one that unstaked
    RejectReason.RATE_LIMITED: 10,
}


async def wait_for_rejections(observer: Node, timeout_s: float = 60) -> None:
    rejected = observer.discovery.validator.rejected
    try:
        async with asyncio.timeout(timeout_s):
            # Rejections have no event of their own; poll the counters.
            while any(rejected[r] < n for r, n in EXPECTED.items()):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        seen = {r.name: n for r in RejectReason if (n := rejected[r])}
        raise AssertionError(
            f"rejections after {timeout_s} s: {seen}; expected at least {EXPECTED}"
        ) from None


async def test_bad_adverts_are_dropped_and_honest_ones_arrive(chain: Chain) -> None:
    honest, mallory, trent = chain.keys[1], chain.keys[2], chain.keys[3]
    eve = NodeKey.generate()
    for key in (honest, mallory, trent):
        await register(chain, key)
    await chain.registry.request_unstake(sender=trent.account)
    p2p = settings()

    def strict() -> AdvertValidator:
        # Bursts of 8, then practically nothing: mallory's flood hits the limit within the test.
        return AdvertValidator(chain.registry, rate_per_s=0.01, rate_burst=8)

    async with (
        start_node(chain.keys[4], chain.registry, p2p, validator=strict()) as observer_a,
        start_node(chain.keys[5], chain.registry, p2p, validator=strict()) as observer_b,
        start_node(honest, chain.registry, p2p, validator=strict()) as provider,
        P2PHost.start(mallory, p2p) as mallory_host,
        P2PHost.start(eve, p2p) as eve_host,
        P2PHost.start(trent, p2p) as trent_host,
    ):
        observers = [observer_a, observer_b]
        attackers = [mallory_host, eve_host, trent_host]
        for host in [provider.host, *attackers]:
            for observer in observers:
                await host.connect(observer.host.addrs[0])
        await observer_a.host.connect(observer_b.host.addrs[0])
        for host in attackers:
            await host.subscribe(ADVERT_TOPIC)
        await wait_for_topic_peers([o.host for o in observers], minimum=5)
        await wait_for_topic_peers(attackers, minimum=2)

        honest_advert = await provider.discovery.announce(offer())
        mallory_first = await send_bad_adverts(
            mallory_host, eve_host, trent_host, mallory, eve, trent, honest_advert.signed
        )

        for observer in observers:
            await wait_for_rejections(observer)
            await observer.discovery.directory.wait_for(lambda d: honest.address in d, timeout_s=30)
            directory = observer.discovery.directory
            assert eve.address not in directory
            assert trent.address not in directory
            assert mallory.address in directory  # its one valid advert, before it misbehaved
            # The directory holds mallory's newest accepted advert, not the replayed older one.
            assert directory.get(mallory.address).sequence > mallory_first  # type: ignore[union-attr]

        # After all that, an honest update still reaches everybody.
        await asyncio.sleep(0)
        update = await provider.discovery.announce(offer(price=10**14))
        for observer in observers:
            await observer.discovery.directory.wait_for(
                lambda d: (a := d.get(honest.address)) is not None and a.sequence == update.sequence,
                timeout_s=30,
            )


async def send_bad_adverts(
    mallory_host: P2PHost,
    eve_host: P2PHost,
    trent_host: P2PHost,
    mallory: NodeKey,
    eve: NodeKey,
    trent: NodeKey,
    honest_signed: bytes,
) -> int:
    """Publish one bad advert of each kind and a flood; returns mallory's first (valid) sequence."""

    async def publish(host: P2PHost, data: bytes) -> None:
        await host.publish(ADVERT_TOPIC, data)

    now = int(time.time() * 1000)
    await publish(mallory_host, sign_advert(advert_of(mallory, sequence=now + 100), mallory.private_key))
    await publish(mallory_host, sign_advert(advert_of(mallory, sequence=now + 50), mallory.private_key))
    await publish(
        mallory_host, sign_advert(advert_of(mallory, sequence=now + 200, ttl_ms=-1), mallory.private_key)
    )
    await publish(mallory_host, sign_advert(advert_of(mallory, sequence=now + 300), eve.private_key))
    await publish(mallory_host, honest_signed)
    await publish(mallory_host, b"\x0a" + b"\xff" * (MAX_ADVERT_BYTES + 10))
    await publish(eve_host, sign_advert(advert_of(eve), eve.private_key))
    await publish(trent_host, sign_advert(advert_of(trent), trent.private_key))
    # The flood: 12 valid, ever newer adverts at once; the burst allows 2 more, then no more.
    for i in range(12):
        flood = advert_of(mallory, sequence=now + 1000 + i)
        await publish(mallory_host, sign_advert(flood, mallory.private_key))
    return now + 100
