"""`AdvertRefresher`: publishes the provider's advert again before it expires, for as long as it runs.

A publish that fails (the overlay briefly down, no peers yet) is logged and tried again soon;
it never stops the node: an advert that lapses for a while costs jobs, a stopped node costs all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from node.logging import get_logger

log = get_logger(__name__)

# After a failed publish, wait this long first, doubling up to the refresh interval.
FIRST_RETRY_S = 0.5


class AdvertRefresher:
    def __init__(self, announce: Callable[[], Awaitable[object]], *, interval_s: float) -> None:
        self._announce = announce
        self.interval_s = interval_s
        self.ready = asyncio.Event()
        self.failures = 0

    async def run(self) -> None:
        """Announce now, then every `interval_s`; sooner again after a failure."""
        self.ready.set()
        while True:
            try:
                await self._announce()
            except Exception as exc:
                self.failures += 1
                wait_s = min(self.interval_s, FIRST_RETRY_S * 2 ** min(self.failures - 1, 16))
                log.warning("advert_publish_failed", error=repr(exc), retry_in_s=wait_s)
            else:
                self.failures = 0
                wait_s = self.interval_s
            await asyncio.sleep(wait_s)
