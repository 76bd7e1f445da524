"""The advert refresher keeps publishing through failures: a publish error is logged, never fatal."""

from __future__ import annotations

import asyncio

from node.discovery.refresher import AdvertRefresher
from node.errors import P2PError


async def test_can_keep_announcing_after_a_publish_error() -> None:
    calls: list[int] = []
    third = asyncio.Event()

    async def announce() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            third.set()
        if len(calls) == 1:
            raise P2PError("no peers subscribed to the advert topic yet")
        if len(calls) == 2:
            raise RuntimeError("a fault nobody expected")

    refresher = AdvertRefresher(announce, interval_s=0.01)
    task = asyncio.create_task(refresher.run())
    try:
        await asyncio.wait_for(refresher.ready.wait(), 5)
        await asyncio.wait_for(third.wait(), 5)
        assert not task.done()
        assert refresher.failures == 0  # the third publish went through
    finally:
        task.cancel()
