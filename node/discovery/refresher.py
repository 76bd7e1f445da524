"""`AdvertRefresher`: publishes the provider's advert again before it expires, for as long as it
runs, and sooner when its load changed enough to be worth telling (`nudge()`).

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


def _never() -> float | None:
    return None


class AdvertRefresher:
    def __init__(
        self,
        announce: Callable[[], Awaitable[object]],
        *,
        interval_s: float,
        due_in: Callable[[], float | None] = _never,
    ) -> None:
        """`due_in()` says, after a nudge, in how many seconds the changed advert may go out
        (None: the change is not worth an advert after all)."""
        self._announce = announce
        self._due_in = due_in
        self.interval_s = interval_s
        self.ready = asyncio.Event()
        self.failures = 0
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """The offer changed: announce it as soon as `due_in()` allows."""
        self._nudged.set()

    async def run(self) -> None:
        """Announce now, then every `interval_s` or when nudged; sooner again after a failure."""
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
            await self._wait(wait_s)

    async def _wait(self, wait_s: float) -> None:
        """Until `wait_s` passed, or a nudged change is due sooner."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    await self._nudged.wait()
            except TimeoutError:
                return
            self._nudged.clear()
            due = self._due_in()
            if due is not None and due < deadline - loop.time():
                # Changes made meanwhile go out with this advert: it carries the latest offer.
                await asyncio.sleep(max(0.0, due))
                return
