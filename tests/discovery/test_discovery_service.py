"""`DiscoveryService` as one of the node's components: its loops run inside `run()` (none loose),
`ready` says when, a failed publish of our advert is logged and tried again, and the advert is
stored in the DHT by the running component, not by a task of its own."""

from __future__ import annotations

import asyncio
from typing import Any

from discovery_support import offer

from node.chain.keys import NodeKey
from node.config import P2PSettings
from node.discovery.service import DiscoveryService
from node.errors import P2PError
from node.p2p.identity import peer_id_from


class _Subscription:
    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Any:
        await asyncio.Event().wait()  # no adverts arrive


class _Host:
    """The bits of `P2PHost` discovery uses; `publish` fails `failures` times first."""

    def __init__(self, key: NodeKey, failures: int) -> None:
        self.address = key.address
        self.peer_id = str(peer_id_from(key.private_key))
        self.addrs = ["/ip4/127.0.0.1/tcp/4001"]
        self.failures = failures
        self.published = asyncio.Event()
        self.stored = asyncio.Event()

    async def subscribe(self, _topic: str, _check: Any, *, quick_validator: Any) -> _Subscription:
        return _Subscription()

    async def publish(self, _topic: str, _data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise P2PError("no peers subscribed to the advert topic yet")
        self.published.set()

    async def dht_put(self, _key: str, _value: bytes) -> None:
        self.stored.set()


async def test_can_run_discovery_as_a_component_through_publish_errors(monkeypatch: Any) -> None:
    monkeypatch.setattr("node.discovery.service.DHT_PUT_DELAY_S", 0.0)
    monkeypatch.setattr("node.discovery.refresher.FIRST_RETRY_S", 0.01)
    key = NodeKey.generate()
    host = _Host(key, failures=2)
    settings = P2PSettings(advert_refresh_s=0.05)
    before = asyncio.all_tasks()
    async with DiscoveryService.subscribed(
        host,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        settings,
        key=key,
        offer=offer(),
    ) as discovery:
        running = asyncio.create_task(discovery.run())
        await asyncio.wait_for(discovery.ready.wait(), 5)
        await asyncio.wait_for(host.published.wait(), 5)  # published after two failures
        await asyncio.wait_for(host.stored.wait(), 5)
        assert not running.done()
        assert discovery.current is not None
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert asyncio.all_tasks() == before
