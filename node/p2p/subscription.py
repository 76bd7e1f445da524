"""The asyncio side of a gossipsub subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from node.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A gossipsub message that passed the topic's validator; `source` is its signed originator."""

    topic: str
    source: str
    data: bytes


class Subscription:
    """Validated messages of one topic, in arrival order. Iterate with `async for`."""

    def __init__(self, topic: str, queue_size: int) -> None:
        self.topic = topic
        self.dropped = 0
        self._queue: asyncio.Queue[GossipMessage] = asyncio.Queue(queue_size)

    def deliver(self, message: GossipMessage) -> None:
        """Called on the asyncio loop by the p2p thread; never blocks it."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("subscription_queue_full", topic=self.topic, dropped=self.dropped)

    async def get(self) -> GossipMessage:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[GossipMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GossipMessage]:
        while True:
            yield await self._queue.get()
