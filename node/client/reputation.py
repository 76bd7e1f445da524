"""Providers' reputation as this client learnt it, in memory for the sampler and written through
to the database, so an exclusion (a spot check lost) outlives a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from node.domain.records import ProviderReputation
from node.errors import StorageError
from node.logging import get_logger
from node.storage import Database
from node.types import Address

log = get_logger(__name__)

Move = Callable[[ProviderReputation], ProviderReputation]


class ReputationBook:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[Address, ProviderReputation] = {}
        # Writes of one provider's reputation happen in the order its moves were made.
        self._locks: dict[Address, asyncio.Lock] = {}

    async def load(self) -> None:
        for reputation in await self._db.run(self._db.reputation.all):
            self._known[reputation.address] = reputation

    def get(self, address: Address) -> ProviderReputation:
        return self._known.get(address) or ProviderReputation(address)

    def known(self, address: Address) -> ProviderReputation | None:
        """None for a provider this client never had a result from or heard of."""
        return self._known.get(address)

    def all(self) -> Iterable[ProviderReputation]:
        return self._known.values()

    def excluded(self) -> set[Address]:
        return {r.address for r in self._known.values() if r.excluded}

    async def update(
        self, address: Address, move: Move, *, durable: bool = True, write: bool = True
    ) -> ProviderReputation:
        """Apply `move` now (the sampler sees it at once) and, with `write`, store the result (with
        any moves kept unwritten before). An exclusion must be `durable` (a failed write raises);
        counters are best effort."""
        moved = move(self.get(address))
        self._known[address] = moved
        if not write:
            return moved
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            try:
                await self._db.run(self._db.reputation.save, self._known[address])
            except StorageError as exc:
                if durable:
                    raise
                log.warning("reputation_not_saved", provider=address, error=str(exc))
        return moved
