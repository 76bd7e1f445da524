"""The directory of live providers: latest valid advert per address, expiring stale ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from node.discovery.advert import DeviceKind, ProviderAdvert
from node.types import Address, Hash32


class Directory:
    """Live provider adverts, queryable by model, device and price. Lives on the asyncio loop."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._adverts: dict[Address, ProviderAdvert] = {}
        self._changed = asyncio.Event()
        # Called with every advert that changes the directory (schedulers react to new offers).
        self.on_upsert: list[Callable[[ProviderAdvert], None]] = []

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def __len__(self) -> int:
        return len(self.live())

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.get(Address(address)) is not None

    def upsert(self, advert: ProviderAdvert) -> bool:
        """Keep `advert` if it is newer than what we hold; True when it changed the directory."""
        current = self._adverts.get(advert.address)
        if current is not None and current.sequence >= advert.sequence:
            return False
        if advert.is_expired(self._now_ms()):
            return False
        self._adverts[advert.address] = advert
        self._notify()
        for listener in self.on_upsert:
            listener(advert)
        return True

    def remove(self, address: Address) -> None:
        if self._adverts.pop(address, None) is not None:
            self._notify()

    def expire(self) -> list[Address]:
        """Drop every advert past its expiry; returns the addresses dropped."""
        now = self._now_ms()
        stale = [a for a, advert in self._adverts.items() if advert.is_expired(now)]
        for address in stale:
            del self._adverts[address]
        if stale:
            self._notify()
        return stale

    def get(self, address: Address) -> ProviderAdvert | None:
        advert = self._adverts.get(address)
        if advert is None or advert.is_expired(self._now_ms()):
            return None
        return advert

    def live(self) -> list[ProviderAdvert]:
        now = self._now_ms()
        return [a for a in self._adverts.values() if not a.is_expired(now)]

    def find(
        self,
        *,
        model_id: Hash32 | None = None,
        device_kind: DeviceKind | None = None,
        min_memory_bytes: int = 0,
        max_price_wei: int | None = None,
        min_free_slots: int = 0,
        warm_only: bool = False,
    ) -> list[ProviderAdvert]:
        """Live providers matching every given criterion, cheapest first for `model_id`."""
        matches = [
            a
            for a in self.live()
            if _matches(a, model_id, device_kind, min_memory_bytes, max_price_wei, min_free_slots, warm_only)
        ]
        if model_id is not None:
            matches.sort(key=lambda a: a.price_for(model_id) or 0)
        return matches

    async def wait_for(self, predicate: Callable[[Directory], bool], timeout_s: float) -> None:
        """Wait until `predicate(self)` holds; `TimeoutError` after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self):
                await self._changed.wait()

    def _notify(self) -> None:
        # Wake every waiter once, then hand later waiters a fresh event.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _matches(
    advert: ProviderAdvert,
    model_id: Hash32 | None,
    device_kind: DeviceKind | None,
    min_memory_bytes: int,
    max_price_wei: int | None,
    min_free_slots: int,
    warm_only: bool,
) -> bool:
    offer = advert.offer
    if offer.free_slots < min_free_slots:
        return False
    if device_kind is not None or min_memory_bytes:
        kinds = [d for d in offer.devices if device_kind is None or d.kind is device_kind]
        if not any(d.memory_bytes >= min_memory_bytes for d in kinds):
            return False
    if model_id is None:
        return True
    price = advert.price_for(model_id)
    if price is None or (max_price_wei is not None and price > max_price_wei):
        return False
    return not warm_only or model_id in offer.warm_models
