"""The on-chain registry as discovery sees it: is this provider active (registered and staked)?"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from node.types import Address


class RegistryView(Protocol):
    """Implemented by `node.chain.registry.ProviderRegistry`."""

    async def is_active(self, address: Address) -> bool: ...


class CachedRegistryView:
    """A TTL cache in front of the registry: every advert refresh must not cost a chain call.

    Inactive answers are kept for a shorter time than active ones, so a provider that has just
    registered is admitted quickly, while a flood of adverts from an unregistered one is not.
    """

    def __init__(
        self,
        inner: RegistryView,
        *,
        active_ttl_s: float = 60.0,
        inactive_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._active_ttl_s = active_ttl_s
        self._inactive_ttl_s = inactive_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}
        self.lookups = 0

    async def is_active(self, address: Address) -> bool:
        key = address.lower()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        self.lookups += 1
        active = await self._inner.is_active(address)
        self._cache[key] = (active, now + (self._active_ttl_s if active else self._inactive_ttl_s))
        return active

    def peek(self, address: Address) -> bool | None:
        """The cached answer, or None when only the chain can say (never blocks)."""
        cached = self._cache.get(address.lower())
        if cached is None or self._clock() >= cached[1]:
            return None
        return cached[0]

    def forget(self, address: Address) -> None:
        self._cache.pop(address.lower(), None)
